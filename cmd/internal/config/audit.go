package config

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/mcpvault/vault/audit"
)

// AuditKeys parses VAULT_AUDIT_KEYS (the Ed25519 signing keyring of the
// event stream, independent of the master keys), or loads (creating once)
// the dev key in the data dir. dev reports whether the dev key is in use.
func (c Config) AuditKeys() (*audit.Keyring, bool, error) {
	spec := os.Getenv("VAULT_AUDIT_KEYS")
	dev := false
	if spec == "" {
		var err error
		spec, err = loadOrCreate(filepath.Join(c.DataDir, "dev-audit-keys"), func() string {
			return audit.NewKeySpec("audit-dev1")
		})
		if err != nil {
			return nil, false, err
		}
		dev = true
	}
	kr, err := audit.ParseKeyring(spec)
	return kr, dev, err
}

// AuditVerifyKeys returns the keys that verify the stream's signatures:
// VAULT_AUDIT_PUBLIC_KEYS when set (an auditor needs no signing key), else
// VAULT_AUDIT_KEYS, else the dev key of the data dir if it exists (it is
// never created here: a verifier must not invent the key it checks against).
func (c Config) AuditVerifyKeys() (*audit.Keyring, error) {
	if spec := os.Getenv("VAULT_AUDIT_PUBLIC_KEYS"); spec != "" {
		return audit.ParsePublicKeys(spec)
	}
	if spec := os.Getenv("VAULT_AUDIT_KEYS"); spec != "" {
		return audit.ParseKeyring(spec)
	}
	b, err := os.ReadFile(filepath.Join(c.DataDir, "dev-audit-keys"))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("no audit keys: set VAULT_AUDIT_PUBLIC_KEYS (or VAULT_AUDIT_KEYS)")
	}
	if err != nil {
		return nil, err
	}
	return audit.ParseKeyring(strings.TrimSpace(string(b)))
}

// ProjectorAuditKeys are the keys the projector verifies events with:
// VAULT_AUDIT_PUBLIC_KEYS when set, else VAULT_AUDIT_KEYS, else the dev key
// of the data dir (created once, as the API does: whichever starts first).
func (c Config) ProjectorAuditKeys() (*audit.Keyring, error) {
	if spec := os.Getenv("VAULT_AUDIT_PUBLIC_KEYS"); spec != "" {
		return audit.ParsePublicKeys(spec)
	}
	kr, _, err := c.AuditKeys()
	return kr, err
}

// UnsignedUntil reads VAULT_AUDIT_UNSIGNED_UNTIL: the last sequence of a
// stream written before events were signed (default 0: every event must be
// signed). The projector and vaultctl audit verify accept unsigned events up
// to it.
func (c Config) UnsignedUntil() (uint64, error) {
	n, err := strconv.ParseUint(env("VAULT_AUDIT_UNSIGNED_UNTIL", "0"), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("VAULT_AUDIT_UNSIGNED_UNTIL: want a stream sequence")
	}
	return n, nil
}

// Expiry reads VAULT_EXPIRY_LEAD (how long before expires_at
// mcp.credential.expiring_soon is recorded, default 72h) and
// VAULT_EXPIRY_INTERVAL (between scans, default 30s).
func (c Config) Expiry() (lead, interval time.Duration, err error) {
	if lead, err = time.ParseDuration(env("VAULT_EXPIRY_LEAD", "72h")); err != nil || lead < 0 {
		return 0, 0, fmt.Errorf("VAULT_EXPIRY_LEAD: want a duration such as 72h")
	}
	if interval, err = time.ParseDuration(env("VAULT_EXPIRY_INTERVAL", "30s")); err != nil || interval < time.Second {
		return 0, 0, fmt.Errorf("VAULT_EXPIRY_INTERVAL: want a duration of at least 1s")
	}
	return lead, interval, nil
}
