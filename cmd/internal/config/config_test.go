package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestDefaults(t *testing.T) {
	for _, k := range []string{"VAULT_HTTP_ADDR", "VAULT_DATA_DIR", "VAULT_NATS_URL", "VAULT_NATS_LISTEN", "VAULT_STREAM",
		"VAULT_READMODEL_PATH", "VAULT_API_KEYS", "VAULT_MASTER_KEYS", "VAULT_ALLOW_PRIVATE_UPSTREAMS", "VAULT_LOG_LEVEL"} {
		t.Setenv(k, "")
	}
	c, err := Load()
	if err != nil {
		t.Fatal(err)
	}
	if c.HTTPAddr != "127.0.0.1:8080" || c.DataDir != "./data" || !c.Embedded || c.NATSURL != "nats://127.0.0.1:4222" ||
		c.Stream != "VAULT" || c.ReadModelPath != filepath.Join("data", "readmodel.sqlite") || c.AllowPrivate || c.NATSSync != "always" {
		t.Fatalf("defaults: %+v", c)
	}
}

func TestEnvironment(t *testing.T) {
	t.Setenv("VAULT_NATS_URL", "nats://a:4222,nats://b:4222")
	t.Setenv("VAULT_ALLOW_PRIVATE_UPSTREAMS", "true")
	t.Setenv("VAULT_LOG_LEVEL", "debug")
	t.Setenv("VAULT_STREAM", "VAULT2")
	c, err := Load()
	if err != nil {
		t.Fatal(err)
	}
	if c.Embedded || c.NATSURL != "nats://a:4222,nats://b:4222" || !c.AllowPrivate || c.LogLevel.String() != "DEBUG" || c.Stream != "VAULT2" {
		t.Fatalf("%+v", c)
	}
	t.Setenv("VAULT_LOG_LEVEL", "loud")
	if _, err := Load(); err == nil {
		t.Fatal("bad log level accepted")
	}
}

func TestAPIKeysNeverEchoed(t *testing.T) {
	t.Setenv("VAULT_API_KEYS", "acct_a:sk-good,sk-secret-without-account")
	_, _, err := Config{}.APIKeys()
	if err == nil || strings.Contains(err.Error(), "sk-secret") {
		t.Fatalf("error must name the entry, not the key: %v", err)
	}
	t.Setenv("VAULT_MASTER_KEYS", "k1:bm90LTMyLWJ5dGVz")
	_, _, err = Config{}.MasterKeys()
	if err == nil || strings.Contains(err.Error(), "bm90LTMyLWJ5dGVz") {
		t.Fatalf("error must not echo key material: %v", err)
	}
}

func TestDevKeysGeneratedOnceWithMode0600(t *testing.T) {
	t.Setenv("VAULT_API_KEYS", "")
	t.Setenv("VAULT_MASTER_KEYS", "")
	c := Config{DataDir: t.TempDir()}
	k1, dev, err := c.APIKeys()
	if err != nil || !dev || len(k1) != 1 {
		t.Fatalf("%v %v %v", k1, dev, err)
	}
	k2, _, _ := c.APIKeys()
	if k1[0] != k2[0] {
		t.Fatal("dev API key changed between starts")
	}
	if _, dev, err := c.MasterKeys(); err != nil || !dev {
		t.Fatal(err)
	}
	for _, f := range []string{"dev-api-keys", "dev-master-keys"} {
		st, err := os.Stat(filepath.Join(c.DataDir, f))
		if err != nil || st.Mode().Perm() != 0o600 {
			t.Fatalf("%s: %v %v", f, st.Mode(), err)
		}
	}
}

// The data-key pool: 16 keys per (owner, server) by default, 0 turns it
// off; its fills are atomic batches when every write is fsynced.
func TestKeyPool(t *testing.T) {
	for _, k := range []string{"VAULT_KEY_POOL", "VAULT_KEY_POOL_BATCH", "VAULT_NATS_SYNC"} {
		t.Setenv(k, "")
	}
	c, err := Load()
	if err != nil || c.KeyPool != 16 || !c.KeyPoolAtomic {
		t.Fatalf("defaults (sync always): pool %d atomic %v, %v", c.KeyPool, c.KeyPoolAtomic, err)
	}
	t.Setenv("VAULT_NATS_SYNC", "2m")
	if c, err = Load(); err != nil || c.KeyPoolAtomic {
		t.Fatalf("sync 2m: atomic %v, %v", c.KeyPoolAtomic, err)
	}
	t.Setenv("VAULT_KEY_POOL", "0")
	t.Setenv("VAULT_KEY_POOL_BATCH", "atomic")
	if c, err = Load(); err != nil || c.KeyPool != 0 || !c.KeyPoolAtomic {
		t.Fatalf("off, atomic: %+v, %v", c, err)
	}
	for k, v := range map[string]string{"VAULT_KEY_POOL": "-1", "VAULT_KEY_POOL_BATCH": "sometimes"} {
		t.Setenv(k, v)
		if _, err := Load(); err == nil {
			t.Fatalf("%s=%s accepted", k, v)
		}
		t.Setenv(k, "")
	}
}
