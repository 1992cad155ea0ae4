// Package config reads the environment of OPERATIONS.md for the commands.
// Configuration is read here and in cmd/* only.
package config

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/mcpvault/vault/eventstore"
	"github.com/mcpvault/vault/httpapi"
	"github.com/mcpvault/vault/seal"
)

// Config is the whole environment.
type Config struct {
	HTTPAddr      string
	DataDir       string
	NATSURL       string // never empty: the embedded server's URL when VAULT_NATS_URL is unset
	Embedded      bool   // VAULT_NATS_URL was unset
	NATSUser      string // VAULT_NATS_USER
	NATSPassword  string // VAULT_NATS_PASSWORD
	NATSTLSCA     string // VAULT_NATS_TLS_CA
	NATSTLSCert   string // VAULT_NATS_TLS_CERT
	NATSTLSKey    string // VAULT_NATS_TLS_KEY
	NATSListen    string
	NATSSync      string // "always" or a duration, for the embedded server
	Stream        string
	Replicas      int
	ReadModelPath string
	AllowPrivate  bool
	RateLimit     float64
	LogLevel      slog.Level
	// GroupCommit: VAULT_GROUP_COMMIT (default off: measured no faster
	// with nats-server 2.15.2, see docs/benchmarks.md).
	GroupCommit bool
	// KeyPool: VAULT_KEY_POOL, the data keys stored ahead per (owner, server)
	// (default 16; 0 = off, every create stores its key inline).
	KeyPool int
	// KeyPoolAtomic: VAULT_KEY_POOL_BATCH=atomic stores the pool's keys as
	// JetStream atomic batches (the default with VAULT_NATS_SYNC=always);
	// async as asynchronous publishes acknowledged together (the default
	// otherwise).
	KeyPoolAtomic bool
	// MetricsAddr (VAULT_METRICS_ADDR) serves /metrics and the detailed
	// readiness on their own address; empty = on HTTPAddr.
	MetricsAddr string
	// MaxServersPerOwner and MaxCredentialsPerServer are the operator caps
	// (VAULT_MAX_SERVERS_PER_OWNER, VAULT_MAX_CREDENTIALS_PER_SERVER); 0 = off.
	MaxServersPerOwner      int
	MaxCredentialsPerServer int
}

func env(name, def string) string {
	if v, ok := os.LookupEnv(name); ok && v != "" {
		return v
	}
	return def
}

// Load reads the environment.
func Load() (Config, error) {
	c := Config{
		HTTPAddr:   env("VAULT_HTTP_ADDR", "127.0.0.1:8080"),
		DataDir:    env("VAULT_DATA_DIR", "./data"),
		NATSListen: env("VAULT_NATS_LISTEN", "127.0.0.1:4222"),
		NATSSync:   env("VAULT_NATS_SYNC", "always"),
		Stream:     env("VAULT_STREAM", "VAULT"),
	}
	c.ReadModelPath = env("VAULT_READMODEL_PATH", filepath.Join(c.DataDir, "readmodel.sqlite"))
	c.NATSURL = os.Getenv("VAULT_NATS_URL")
	c.NATSUser, c.NATSPassword = os.Getenv("VAULT_NATS_USER"), os.Getenv("VAULT_NATS_PASSWORD")
	c.NATSTLSCA, c.NATSTLSCert, c.NATSTLSKey = os.Getenv("VAULT_NATS_TLS_CA"), os.Getenv("VAULT_NATS_TLS_CERT"), os.Getenv("VAULT_NATS_TLS_KEY")
	if (c.NATSTLSCert == "") != (c.NATSTLSKey == "") {
		return c, fmt.Errorf("VAULT_NATS_TLS_CERT and VAULT_NATS_TLS_KEY: set both or neither")
	}
	if c.NATSPassword != "" && c.NATSUser == "" {
		return c, fmt.Errorf("VAULT_NATS_PASSWORD needs VAULT_NATS_USER")
	}
	if c.NATSURL == "" {
		c.Embedded = true
		c.NATSURL = "nats://" + c.NATSListen
	}
	if c.NATSSync != "always" {
		if _, err := time.ParseDuration(c.NATSSync); err != nil {
			return c, fmt.Errorf("VAULT_NATS_SYNC: want 'always' or a duration such as 2m")
		}
	}
	var err error
	if c.AllowPrivate, err = strconv.ParseBool(env("VAULT_ALLOW_PRIVATE_UPSTREAMS", "false")); err != nil {
		return c, fmt.Errorf("VAULT_ALLOW_PRIVATE_UPSTREAMS: want true or false")
	}
	if c.GroupCommit, err = strconv.ParseBool(env("VAULT_GROUP_COMMIT", "false")); err != nil {
		return c, fmt.Errorf("VAULT_GROUP_COMMIT: want true or false")
	}
	if c.KeyPool, err = strconv.Atoi(env("VAULT_KEY_POOL", "16")); err != nil || c.KeyPool < 0 || c.KeyPool > 1024 {
		return c, fmt.Errorf("VAULT_KEY_POOL: want 0 (off) to 1024 keys per (owner, server)")
	}
	// Atomic batches share one fsync: measured worth it when every write
	// is fsynced (docs/benchmarks.md), not otherwise (each batch is staged).
	defaultBatch := "async"
	if c.NATSSync == "always" {
		defaultBatch = "atomic"
	}
	switch env("VAULT_KEY_POOL_BATCH", defaultBatch) {
	case "async":
	case "atomic":
		c.KeyPoolAtomic = true
	default:
		return c, fmt.Errorf("VAULT_KEY_POOL_BATCH: want async or atomic")
	}
	if c.Replicas, err = strconv.Atoi(env("VAULT_NATS_REPLICAS", "1")); err != nil || c.Replicas < 1 || c.Replicas > 5 {
		return c, fmt.Errorf("VAULT_NATS_REPLICAS: want 1 to 5")
	}
	if c.RateLimit, err = strconv.ParseFloat(env("VAULT_RATE_LIMIT", "1000"), 64); err != nil || c.RateLimit < 0 {
		return c, fmt.Errorf("VAULT_RATE_LIMIT: want requests per second per account (0 = off)")
	}
	c.MetricsAddr = os.Getenv("VAULT_METRICS_ADDR")
	if c.MaxServersPerOwner, err = strconv.Atoi(env("VAULT_MAX_SERVERS_PER_OWNER", "0")); err != nil || c.MaxServersPerOwner < 0 {
		return c, fmt.Errorf("VAULT_MAX_SERVERS_PER_OWNER: want a count (0 = no limit)")
	}
	if c.MaxCredentialsPerServer, err = strconv.Atoi(env("VAULT_MAX_CREDENTIALS_PER_SERVER", "0")); err != nil || c.MaxCredentialsPerServer < 0 {
		return c, fmt.Errorf("VAULT_MAX_CREDENTIALS_PER_SERVER: want a count (0 = no limit)")
	}
	if err := c.LogLevel.UnmarshalText([]byte(env("VAULT_LOG_LEVEL", "info"))); err != nil {
		return c, fmt.Errorf("VAULT_LOG_LEVEL: want debug, info, warn or error")
	}
	if strings.ContainsAny(c.Stream, " .*>") {
		return c, fmt.Errorf("VAULT_STREAM: a stream name without spaces, dots or wildcards")
	}
	return c, nil
}

// CredentialsDir is where the embedded server writes one NATS URL per role.
func (c Config) CredentialsDir() string { return filepath.Join(c.DataDir, "nats-credentials") }

// NATS returns the URL and identity a process of role (api or projector)
// connects with. With the embedded server (VAULT_NATS_URL unset) that is the
// role's URL file written by `vault run` into the data dir; otherwise
// VAULT_NATS_URL with VAULT_NATS_USER/VAULT_NATS_PASSWORD (or the URL's
// userinfo) and the VAULT_NATS_TLS_* files.
func (c Config) NATS(role string) (string, eventstore.Auth, error) {
	a := eventstore.Auth{Role: role, User: c.NATSUser, Password: c.NATSPassword,
		TLSCA: c.NATSTLSCA, TLSCert: c.NATSTLSCert, TLSKey: c.NATSTLSKey}
	if !c.Embedded || c.NATSUser != "" {
		return c.NATSURL, a, nil
	}
	b, err := os.ReadFile(filepath.Join(c.CredentialsDir(), role+".url"))
	if errors.Is(err, fs.ErrNotExist) {
		// Not started by `vault run` yet: the embedded server refuses
		// anonymous clients, so say where the identity comes from.
		return "", a, fmt.Errorf("no NATS identity: %s/%s.url does not exist (start the vault with `vault run`, or set VAULT_NATS_URL and VAULT_NATS_USER/VAULT_NATS_PASSWORD)", c.CredentialsDir(), role)
	}
	if err != nil {
		return "", a, err
	}
	return strings.TrimSpace(string(b)), a, nil
}

// RequireKeys refuses to run against an operator's NATS (VAULT_NATS_URL set)
// without VAULT_API_KEYS and VAULT_MASTER_KEYS: dev keys are generated only
// for the embedded server of `vault run` (and by `vault cluster`, which sets
// both).
func (c Config) RequireKeys() error {
	if c.Embedded {
		return nil
	}
	var missing []string
	for _, k := range []string{"VAULT_API_KEYS", "VAULT_MASTER_KEYS"} {
		if os.Getenv(k) == "" {
			missing = append(missing, k)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("%s must be set when VAULT_NATS_URL names a NATS server (dev keys are generated only by `make run` with the embedded server)", strings.Join(missing, " and "))
	}
	return nil
}

// Logger returns the process logger (text on stderr).
func (c Config) Logger(process string) *slog.Logger {
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: c.LogLevel})).With("process", process)
}

// APIKeys parses VAULT_API_KEYS, or loads (creating once) the dev key in the
// data dir. generated reports whether the dev key is in use.
func (c Config) APIKeys() (keys []httpapi.APIKey, dev bool, err error) {
	spec := os.Getenv("VAULT_API_KEYS")
	if spec == "" {
		spec, err = loadOrCreate(filepath.Join(c.DataDir, "dev-api-keys"), func() string {
			b := make([]byte, 24)
			rand.Read(b)
			return "dev:sk-vault-dev-" + hex.EncodeToString(b)
		})
		if err != nil {
			return nil, false, err
		}
		dev = true
	}
	for i, pair := range strings.Split(spec, ",") {
		acct, key, ok := strings.Cut(strings.TrimSpace(pair), ":")
		if !ok || acct == "" || key == "" {
			// Never echo the pair: it holds a key.
			return nil, false, fmt.Errorf("VAULT_API_KEYS: entry %d is not account:key", i+1)
		}
		keys = append(keys, httpapi.APIKey{Account: acct, Key: key})
	}
	return keys, dev, nil
}

// MasterKeys parses VAULT_MASTER_KEYS, or loads (creating once) a dev key
// in the data dir. dev reports whether the dev key is in use.
func (c Config) MasterKeys() (*seal.Keyring, bool, error) {
	spec := os.Getenv("VAULT_MASTER_KEYS")
	dev := false
	if spec == "" {
		var err error
		spec, err = loadOrCreate(filepath.Join(c.DataDir, "dev-master-keys"), func() string {
			return seal.NewKeySpec("dev1")
		})
		if err != nil {
			return nil, false, err
		}
		dev = true
	}
	kr, err := seal.ParseKeyring(spec)
	if err != nil {
		return nil, false, fmt.Errorf("VAULT_MASTER_KEYS: %w", err)
	}
	return kr, dev, nil
}

// loadOrCreate reads a 0600 file, creating it with gen() exactly once even
// when several processes race.
func loadOrCreate(path string, gen func() string) (string, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return "", err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err == nil {
		_, werr := f.WriteString(gen() + "\n")
		if cerr := f.Close(); werr == nil {
			werr = cerr
		}
		if werr != nil {
			os.Remove(path)
			return "", werr
		}
	} else if !errors.Is(err, fs.ErrExist) {
		return "", err
	}
	for i := 0; i < 50; i++ {
		b, err := os.ReadFile(path)
		if err != nil {
			return "", err
		}
		if s := strings.TrimSpace(string(b)); s != "" {
			return s, nil
		}
		time.Sleep(20 * time.Millisecond) // another process is writing it
	}
	return "", fmt.Errorf("%s is empty", path)
}
