package httpapi

import (
	"strconv"
	"unicode/utf8"

	"github.com/mcpvault/vault/domain"
	"github.com/mcpvault/vault/events"
)

// appendCredentialList appends the JSON of a credential list page — the
// bytes json.Marshal(renderList(items, more, renderCredential, …)) gives
// (a test holds them equal), written directly: a page of 20 is the
// hottest answer, and reflection and re-parsed json.Marshaler output were
// a quarter of its cost.
func appendCredentialList(dst []byte, items []domain.Credential, more bool) []byte {
	dst = append(dst, `{"object":"list","data":[`...)
	for i := range items {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = appendCredential(dst, &items[i])
	}
	dst = append(dst, `],"first_id":`...)
	if len(items) > 0 {
		dst = appendJSONString(dst, items[0].ID)
		dst = append(dst, `,"last_id":`...)
		dst = appendJSONString(dst, items[len(items)-1].ID)
	} else {
		dst = append(dst, `null,"last_id":null`...)
	}
	dst = append(dst, `,"has_more":`...)
	dst = strconv.AppendBool(dst, more)
	return append(dst, '}')
}

// appendCredential appends the mcp.credential object (credentialJSON).
func appendCredential(dst []byte, c *domain.Credential) []byte {
	dst = append(dst, `{"id":`...)
	dst = appendJSONString(dst, c.ID)
	dst = append(dst, `,"object":"mcp.credential","server_id":`...)
	dst = appendJSONString(dst, c.ServerID)
	dst = append(dst, `,"name":`...)
	dst = appendOptString(dst, c.Name)
	dst = append(dst, `,"auth_type":`...)
	dst = appendJSONString(dst, c.AuthType)
	dst = append(dst, `,"authorization_preview":`...)
	dst = appendOptString(dst, c.AuthorizationPreview)
	dst = append(dst, `,"header_names":[`...)
	for i, n := range c.HeaderNames {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = appendJSONString(dst, n)
	}
	dst = append(dst, `],"expires_at":`...)
	dst = appendOptTime(dst, c.ExpiresAt)
	dst = append(dst, `,"last_used_at":`...)
	dst = appendOptTime(dst, c.LastUsedAt)
	dst = append(dst, `,"created_at":`...)
	dst = appendTime(dst, c.CreatedAt)
	dst = append(dst, `,"updated_at":`...)
	dst = appendTime(dst, c.UpdatedAt)
	dst = append(dst, `,"revoked_at":`...)
	dst = appendOptTime(dst, c.RevokedAt)
	return append(dst, '}')
}

func appendOptString(dst []byte, s *string) []byte {
	if s == nil {
		return append(dst, "null"...)
	}
	return appendJSONString(dst, *s)
}

func appendTime(dst []byte, t events.Time) []byte {
	dst = append(dst, '"')
	dst = t.UTC().AppendFormat(dst, events.TimeLayout)
	return append(dst, '"')
}

func appendOptTime(dst []byte, t *events.Time) []byte {
	if t == nil {
		return append(dst, "null"...)
	}
	return appendTime(dst, *t)
}

const hexDigits = "0123456789abcdef"

// appendJSONString appends s as a JSON string escaped exactly as
// encoding/json does (HTML-safe: <, > and & as \u003c…; invalid UTF-8 as
// \ufffd; U+2028 and U+2029 escaped).
func appendJSONString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		if b := s[i]; b < utf8.RuneSelf {
			if b >= 0x20 && b != '"' && b != '\\' && b != '<' && b != '>' && b != '&' {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch b {
			case '\\', '"':
				dst = append(dst, '\\', b)
			case '\b':
				dst = append(dst, '\\', 'b')
			case '\f':
				dst = append(dst, '\\', 'f')
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[b>>4], hexDigits[b&0xF])
			}
			i++
			start = i
			continue
		}
		c, size := utf8.DecodeRuneInString(s[i:])
		if c == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if c == '\u2028' || c == '\u2029' {
			dst = append(dst, s[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', hexDigits[c&0xF])
			i += size
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}
