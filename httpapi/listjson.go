package httpapi

import (
	"strconv"

	"github.com/mcpvault/vault/apijson"
)

// listStart opens a list answer; the page's objects follow (the read model
// stores each credential's object ready to send: projections.DocPage), then
// listEnd. Together they are the bytes json.Marshal(renderList(…)) gives (a
// test holds them equal).
const listStart = `{"object":"list","data":[`

// appendListEnd closes a list answer whose data holds n objects, first to
// last, and says whether more follow.
func appendListEnd(dst []byte, n int, first, last string, more bool) []byte {
	dst = append(dst, `],"first_id":`...)
	if n > 0 {
		dst = apijson.AppendString(dst, first)
		dst = append(dst, `,"last_id":`...)
		dst = apijson.AppendString(dst, last)
	} else {
		dst = append(dst, `null,"last_id":null`...)
	}
	dst = append(dst, `,"has_more":`...)
	dst = strconv.AppendBool(dst, more)
	return append(dst, '}')
}
