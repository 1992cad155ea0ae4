package httpapi

import (
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/mcpvault/vault/apijson"
	"github.com/mcpvault/vault/domain"
	"github.com/mcpvault/vault/events"
)

// The hand-written list answer (and each credential object in it) is byte for byte what encoding/json makes of
// the list objects, for pages with every optional field set and unset and
// strings with every kind of character encoding/json escapes.
func TestCredentialListJSONMatchesEncodingJSON(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	pieces := []string{"a", "Z", "0", " ", "\"", "\\", "<", ">", "&", "\b", "\f", "\n", "\r", "\t", "\x00", "\x1f", "\x7f",
		"é", "日本", "\u2028", "\u2029", "\xff", "\xe6\x97", "😀", "'", "/", "\u00a0"}
	str := func() string {
		var b bytes.Buffer
		for range rng.IntN(12) {
			b.WriteString(pieces[rng.IntN(len(pieces))])
		}
		return b.String()
	}
	optStr := func() *string {
		if rng.IntN(3) == 0 {
			return nil
		}
		s := str()
		return &s
	}
	optTime := func() *events.Time {
		if rng.IntN(2) == 0 {
			return nil
		}
		t := events.NewTime(time.Unix(rng.Int64N(4e9), rng.Int64N(1e9)))
		return &t
	}
	for round := range 300 {
		items := make([]domain.Credential, rng.IntN(22))
		for i := range items {
			var names []string
			if rng.IntN(3) > 0 {
				names = []string{}
				for range rng.IntN(4) {
					names = append(names, str())
				}
			}
			items[i] = domain.Credential{ID: str(), ServerID: str(), Name: optStr(), AuthType: str(),
				AuthorizationPreview: optStr(), HeaderNames: names, ExpiresAt: optTime(), LastUsedAt: optTime(),
				CreatedAt: events.NewTime(time.Unix(rng.Int64N(4e9), 0)), UpdatedAt: events.NewTime(time.Now()), RevokedAt: optTime()}
		}
		more := rng.IntN(2) == 0
		want, err := json.Marshal(renderList(items, more, renderCredential, func(c domain.Credential) string { return c.ID }))
		if err != nil {
			t.Fatal(err)
		}
		// The answer as the handler writes it: the objects as the read
		// model stores them (apijson.AppendCredential) between the list's
		// start and end.
		got := []byte(listStart)
		for i := range items {
			if i > 0 {
				got = append(got, ',')
			}
			got = apijson.AppendCredential(got, &items[i])
		}
		first, last := "", ""
		if len(items) > 0 {
			first, last = items[0].ID, items[len(items)-1].ID
		}
		if got = appendListEnd(got, len(items), first, last, more); !bytes.Equal(got, want) {
			t.Fatalf("round %d:\n got %s\nwant %s", round, got, want)
		}
	}
}
