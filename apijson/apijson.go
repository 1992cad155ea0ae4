// Package apijson writes the public API's JSON objects directly, byte for
// byte what encoding/json gives for them: the hottest answers (a credential,
// a page of them) are written without reflection, and the read model stores
// each credential's object ready to send.
package apijson

import (
	"unicode/utf8"

	"github.com/mcpvault/vault/domain"
	"github.com/mcpvault/vault/events"
)

// AppendCredential appends the mcp.credential object of c: the bytes
// encoding/json gives for httpapi's credentialJSON (a test there holds them
// equal). The read model stores it per credential (projections), so a read
// copies it instead of rendering.
func AppendCredential(dst []byte, c *domain.Credential) []byte {
	dst = append(dst, `{"id":`...)
	dst = AppendString(dst, c.ID)
	dst = append(dst, `,"object":"mcp.credential","server_id":`...)
	dst = AppendString(dst, c.ServerID)
	dst = append(dst, `,"name":`...)
	dst = appendOptString(dst, c.Name)
	dst = append(dst, `,"auth_type":`...)
	dst = AppendString(dst, c.AuthType)
	dst = append(dst, `,"authorization_preview":`...)
	dst = appendOptString(dst, c.AuthorizationPreview)
	dst = append(dst, `,"header_names":[`...)
	for i, n := range c.HeaderNames {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = AppendString(dst, n)
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
	return AppendString(dst, *s)
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

// AppendString appends s as a JSON string escaped exactly as
// encoding/json does (HTML-safe: <, > and & as \u003c…; invalid UTF-8 as
// \ufffd; U+2028 and U+2029 escaped).
func AppendString(dst []byte, s string) []byte {
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
