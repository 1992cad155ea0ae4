package config

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
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
// event stream, independent of the master keys). Without it a development
// key is used (dev reports it): the data dir's, when one was generated
// there; else, when VAULT_MASTER_KEYS is set (an operator's NATS, replicas
// on several hosts, each with its own data dir), one derived from the first
// master key, so that every process sharing the master keys signs and
// verifies alike instead of holding each other's events; else one is
// generated once in the data dir (make run).
func (c Config) AuditKeys() (*audit.Keyring, bool, error) {
	spec := os.Getenv("VAULT_AUDIT_KEYS")
	dev := false
	if spec == "" {
		dev = true
		path := filepath.Join(c.DataDir, "dev-audit-keys")
		if _, err := os.Stat(path); err != nil && os.Getenv("VAULT_MASTER_KEYS") != "" {
			derived, derr := derivedAuditSpec(os.Getenv("VAULT_MASTER_KEYS"))
			if derr != nil {
				return nil, false, derr
			}
			kr, err := audit.ParseKeyring(derived)
			return kr, dev, err
		}
		var err error
		spec, err = loadOrCreate(path, func() string {
			return audit.NewKeySpec("audit-dev1")
		})
		if err != nil {
			return nil, false, err
		}
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
	if errors.Is(err, fs.ErrNotExist) && os.Getenv("VAULT_MASTER_KEYS") != "" {
		derived, derr := derivedAuditSpec(os.Getenv("VAULT_MASTER_KEYS"))
		if derr != nil {
			return nil, derr
		}
		return audit.ParseKeyring(derived)
	}
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("no audit keys: set VAULT_AUDIT_PUBLIC_KEYS (or VAULT_AUDIT_KEYS)")
	}
	if err != nil {
		return nil, err
	}
	return audit.ParseKeyring(strings.TrimSpace(string(b)))
}

// derivedAuditSpec is the development audit key derived from the first key
// of a VAULT_MASTER_KEYS spec (HMAC-SHA256 of a fixed label: an Ed25519
// seed). Its kid names the master key it comes from, never the key.
func derivedAuditSpec(masterSpec string) (string, error) {
	first, _, _ := strings.Cut(masterSpec, ",")
	kid, b64, ok := strings.Cut(strings.TrimSpace(first), ":")
	key, err := base64.StdEncoding.DecodeString(b64)
	if !ok || err != nil || len(key) != 32 {
		return "", fmt.Errorf("VAULT_MASTER_KEYS: want kid:base64(32 bytes) to derive the development audit key")
	}
	m := hmac.New(sha256.New, key)
	m.Write([]byte("mcp-vault/v1 development audit signing key"))
	id := sha256.Sum256([]byte(kid))
	return "audit-m-" + hex.EncodeToString(id[:6]) + ":" + base64.StdEncoding.EncodeToString(m.Sum(nil)), nil
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
