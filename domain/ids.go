package domain

import (
	"encoding/hex"
	"strings"
)

// ID prefixes. The 32 hex characters after the prefix are the 128 bits of a
// ULID, so IDs sort by creation time.
const (
	ServerIDPrefix     = "mcp_srv_"
	CredentialIDPrefix = "mcp_cred_"
)

// ServerID returns the server ID for the 16 bytes of a ULID.
func ServerID(ulid [16]byte) string { return ServerIDPrefix + hex.EncodeToString(ulid[:]) }

// CredentialID returns the credential ID for the 16 bytes of a ULID.
func CredentialID(ulid [16]byte) string { return CredentialIDPrefix + hex.EncodeToString(ulid[:]) }

// ValidServerID reports whether s has the shape of a server ID.
func ValidServerID(s string) bool { return validID(s, ServerIDPrefix) }

// ValidCredentialID reports whether s has the shape of a credential ID.
func ValidCredentialID(s string) bool { return validID(s, CredentialIDPrefix) }

func validID(s, prefix string) bool {
	if len(s) != len(prefix)+32 || !strings.HasPrefix(s, prefix) {
		return false
	}
	for _, c := range s[len(prefix):] {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}
