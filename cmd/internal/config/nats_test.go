package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func clearNATS(t *testing.T) {
	for _, k := range []string{"VAULT_NATS_URL", "VAULT_NATS_USER", "VAULT_NATS_PASSWORD", "VAULT_NATS_TLS_CA",
		"VAULT_NATS_TLS_CERT", "VAULT_NATS_TLS_KEY", "VAULT_API_KEYS", "VAULT_MASTER_KEYS"} {
		t.Setenv(k, "")
	}
}

func TestNATSIdentityOfTheEmbeddedServer(t *testing.T) {
	clearNATS(t)
	dir := t.TempDir()
	t.Setenv("VAULT_DATA_DIR", dir)
	c, err := Load()
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.NATS("api"); err == nil || !strings.Contains(err.Error(), "vault run") {
		t.Fatalf("no credentials file: want an error naming vault run, got %v", err)
	}
	os.MkdirAll(filepath.Join(dir, "nats-credentials"), 0o700)
	os.WriteFile(filepath.Join(dir, "nats-credentials", "projector.url"), []byte("nats://projector:pw@127.0.0.1:4222\n"), 0o600)
	url, auth, err := c.NATS("projector")
	if err != nil || url != "nats://projector:pw@127.0.0.1:4222" || auth.Role != "projector" || auth.User != "" {
		t.Fatalf("embedded projector: %q %+v %v", url, auth, err)
	}
	if err := c.RequireKeys(); err != nil {
		t.Fatalf("embedded server needs no keys: %v", err)
	}
}

func TestNATSIdentityOfAnOperatorsServer(t *testing.T) {
	clearNATS(t)
	t.Setenv("VAULT_NATS_URL", "nats://n1:4222,nats://n2:4222")
	t.Setenv("VAULT_NATS_USER", "api")
	t.Setenv("VAULT_NATS_PASSWORD", "secret")
	t.Setenv("VAULT_NATS_TLS_CA", "/ca.pem")
	t.Setenv("VAULT_NATS_TLS_CERT", "/c.pem")
	t.Setenv("VAULT_NATS_TLS_KEY", "/k.pem")
	c, err := Load()
	if err != nil {
		t.Fatal(err)
	}
	url, auth, err := c.NATS("api")
	if err != nil || url != "nats://n1:4222,nats://n2:4222" || auth.User != "api" || auth.Password != "secret" ||
		auth.TLSCA != "/ca.pem" || auth.TLSCert != "/c.pem" || auth.TLSKey != "/k.pem" || auth.Role != "api" {
		t.Fatalf("%q %+v %v", url, auth, err)
	}
	err = c.RequireKeys()
	if err == nil || !strings.Contains(err.Error(), "VAULT_API_KEYS and VAULT_MASTER_KEYS") {
		t.Fatalf("operator NATS without keys: %v", err)
	}
	t.Setenv("VAULT_API_KEYS", "a:b")
	if err := c.RequireKeys(); err == nil || strings.Contains(err.Error(), "VAULT_API_KEYS") {
		t.Fatalf("only the master keys are missing: %v", err)
	}
	t.Setenv("VAULT_MASTER_KEYS", "k:x")
	if err := c.RequireKeys(); err != nil {
		t.Fatal(err)
	}

	t.Setenv("VAULT_NATS_TLS_KEY", "")
	if _, err := Load(); err == nil {
		t.Fatal("a TLS certificate without its key was accepted")
	}
	t.Setenv("VAULT_NATS_TLS_KEY", "/k.pem")
	t.Setenv("VAULT_NATS_USER", "")
	if _, err := Load(); err == nil {
		t.Fatal("a NATS password without a user was accepted")
	}
}
