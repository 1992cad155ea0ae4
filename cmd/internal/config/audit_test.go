package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mcpvault/vault/seal"
)

// Without VAULT_AUDIT_KEYS, processes that share VAULT_MASTER_KEYS but not a
// data dir (replicas on several hosts) sign and verify with one derived
// development key; another master key derives another; a data dir's own dev
// key (make run) still wins where it exists; nothing secret is written.
func TestDevAuditKeyDerivedFromMasterKeys(t *testing.T) {
	t.Setenv("VAULT_AUDIT_KEYS", "")
	t.Setenv("VAULT_AUDIT_PUBLIC_KEYS", "")
	master := seal.NewKeySpec("prod1") + "," + seal.NewKeySpec("old")
	t.Setenv("VAULT_MASTER_KEYS", master)
	a, b := Config{DataDir: t.TempDir()}, Config{DataDir: t.TempDir()}
	ka, dev, err := a.AuditKeys()
	if err != nil || !dev {
		t.Fatalf("AuditKeys: %v (dev %v)", err, dev)
	}
	kb, _, err := b.AuditKeys()
	if err != nil {
		t.Fatal(err)
	}
	if ka.PublicSpec() != kb.PublicSpec() || ka.ActiveKID() != kb.ActiveKID() {
		t.Fatalf("replicas with one master keyring derived different audit keys: %s / %s", ka.PublicSpec(), kb.PublicSpec())
	}
	if strings.Contains(ka.ActiveKID(), "prod1") || strings.Contains(ka.PublicSpec(), strings.SplitN(strings.SplitN(master, ",", 2)[0], ":", 2)[1]) {
		t.Fatalf("the derived key names or shows the master key: %s", ka.PublicSpec())
	}
	if _, err := os.Stat(filepath.Join(a.DataDir, "dev-audit-keys")); err == nil {
		t.Fatal("a derived key was written to the data dir")
	}
	vk, err := b.AuditVerifyKeys()
	if err != nil || vk.PublicSpec() != ka.PublicSpec() {
		t.Fatalf("vaultctl verifies with %v (%v), the API signs with %s", vk, err, ka.PublicSpec())
	}
	t.Setenv("VAULT_MASTER_KEYS", seal.NewKeySpec("prod1"))
	kc, _, err := Config{DataDir: t.TempDir()}.AuditKeys()
	if err != nil || kc.PublicSpec() == ka.PublicSpec() {
		t.Fatalf("another master key derived the same audit key (%v)", err)
	}
	// make run: no master keys in the environment: a dev key is generated once.
	t.Setenv("VAULT_MASTER_KEYS", "")
	d := Config{DataDir: t.TempDir()}
	k1, _, err := d.AuditKeys()
	if err != nil {
		t.Fatal(err)
	}
	k2, _, _ := d.AuditKeys()
	if k1.PublicSpec() != k2.PublicSpec() {
		t.Fatal("the data dir's dev key changed between starts")
	}
}
