package eventstore

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Roles of the vault's NATS users (deploy/nats/nats-server.conf.tmpl). A
// process of a role replies on its private inbox prefix _INBOX_<role>, the
// only inbox its user may subscribe to.
const (
	RoleAPI       = "api"
	RoleProjector = "projector"
	RoleAudit     = "audit"
)

// Auth is a process's NATS identity: its role, its user (when not in the
// URL) and TLS files. The zero value connects anonymously with the default
// inbox prefix.
type Auth struct {
	Role     string // api or projector: sets the private inbox prefix
	User     string // VAULT_NATS_USER (the URL's userinfo otherwise)
	Password string // VAULT_NATS_PASSWORD
	TLSCA    string // VAULT_NATS_TLS_CA: PEM of the CA that signs the servers
	TLSCert  string // VAULT_NATS_TLS_CERT: this client's certificate (PEM)
	TLSKey   string // VAULT_NATS_TLS_KEY
	// FailFast makes Dial fail at once when no server answers, instead of
	// retrying in the background (one-shot commands such as a rebuild).
	FailFast bool
	// Log receives asynchronous errors such as permission violations.
	Log *slog.Logger
}

// Dial connects to NATS (comma-separated URLs) with a's identity and keeps
// reconnecting forever once connected.
func Dial(urls, name string, a Auth) (*nats.Conn, error) {
	opts := []nats.Option{
		nats.Name(name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250 * time.Millisecond),
		nats.Timeout(2 * time.Second),
		nats.ReconnectBufSize(-1), // never buffer writes while disconnected: fail them
	}
	if !a.FailFast {
		opts = append(opts, nats.RetryOnFailedConnect(true))
	}
	if role := inboxRole(urls, a); role != "" {
		opts = append(opts, nats.CustomInboxPrefix("_INBOX_"+role))
	}
	if a.User != "" {
		opts = append(opts, nats.UserInfo(a.User, a.Password))
	}
	if a.TLSCA != "" {
		opts = append(opts, nats.RootCAs(a.TLSCA))
	}
	if a.TLSCert != "" || a.TLSKey != "" {
		opts = append(opts, nats.ClientCert(a.TLSCert, a.TLSKey))
	}
	if a.Log != nil {
		log := a.Log
		opts = append(opts, nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			subj := ""
			if sub != nil {
				subj = sub.Subject
			}
			log.Error("NATS error", "err", err, "subject", subj)
		}))
	}
	nc, err := nats.Connect(urls, opts...)
	if err != nil {
		return nil, fmt.Errorf("cannot connect to NATS at %s: %w", Redact(urls), err)
	}
	return nc, nil
}

// inboxRole is a.Role, or else the user name when it is one of the vault's
// process roles (so that nats://api:…@host gets the api user's inbox).
func inboxRole(urls string, a Auth) string {
	if a.Role != "" {
		return a.Role
	}
	user := a.User
	if user == "" {
		if u, err := url.Parse(strings.TrimSpace(strings.Split(urls, ",")[0])); err == nil && u.User != nil {
			user = u.User.Username()
		}
	}
	if user == RoleAPI || user == RoleProjector {
		return user
	}
	return ""
}

// Redact removes passwords from a comma-separated list of URLs, for logs and
// error messages.
func Redact(urls string) string {
	parts := strings.Split(urls, ",")
	for i, p := range parts {
		if u, err := url.Parse(strings.TrimSpace(p)); err == nil && u.User != nil {
			u.User = url.User(u.User.Username())
			parts[i] = u.String()
		}
	}
	return strings.Join(parts, ",")
}

// Bind looks up the event stream and the keys stream without creating or
// changing anything: what the projector (whose NATS user may not create
// streams) does. The store it returns has no idempotency bucket.
func Bind(ctx context.Context, nc *nats.Conn, cfg Config) (*Store, error) {
	s, js, err := newStore(nc, cfg)
	if err != nil {
		return nil, err
	}
	cfg = s.cfg
	if s.stream, err = js.Stream(ctx, cfg.Stream); err != nil {
		return nil, fmt.Errorf("eventstore: stream %s: %w", cfg.Stream, err)
	}
	if s.keys, err = js.Stream(ctx, cfg.KeysStreamName()); err != nil {
		return nil, fmt.Errorf("eventstore: stream %s: %w", cfg.KeysStreamName(), err)
	}
	return s, nil
}

// BindWhenReady retries Bind until it succeeds or ctx ends, calling onRetry
// after each failure (the API creates the streams; the projector may start
// first). Its back-off stays short: the API creates the streams at any
// moment, and a projector that binds late leaves its replica's reads waiting.
func BindWhenReady(ctx context.Context, nc *nats.Conn, cfg Config, onRetry func(error)) (*Store, error) {
	return retryUntil(ctx, Bind, nc, cfg, onRetry, 500*time.Millisecond)
}

// retryUntil calls open (Open or Bind) until it succeeds or ctx ends, with
// a back-off from 100 ms up to maxWait.
func retryUntil(ctx context.Context, open func(context.Context, *nats.Conn, Config) (*Store, error),
	nc *nats.Conn, cfg Config, onRetry func(error), maxWait time.Duration) (*Store, error) {
	wait := 100 * time.Millisecond
	for {
		octx, cancel := context.WithTimeout(ctx, 5*time.Second)
		st, err := open(octx, nc, cfg)
		cancel()
		if err == nil {
			return st, nil
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		onRetry(err)
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(wait):
		}
		wait = min(2*wait, maxWait)
	}
}

// ErrNoQuorum: the stream has no leader or too few current replicas to
// accept a write.
var ErrNoQuorum = errors.New("eventstore: stream cannot take writes")

// WriteHealth reports whether the event stream and the keys stream can take
// a write now: each answers its info request through its leader, and the
// leader sees a quorum of current replicas (heard from within 3 s). It
// returns the event stream's last sequence.
func (s *Store) WriteHealth(ctx context.Context) (uint64, error) {
	var last uint64
	for i, st := range []jetstream.Stream{s.stream, s.keys} {
		info, err := st.Info(ctx)
		if err != nil {
			return 0, fmt.Errorf("%w: %v", ErrUnavailable, err)
		}
		if i == 0 {
			last = info.State.LastSeq
		}
		if err := quorum(info); err != nil {
			return last, err
		}
	}
	return last, nil
}

func quorum(info *jetstream.StreamInfo) error {
	r := info.Config.Replicas
	if r <= 1 || info.Cluster == nil {
		return nil
	}
	if info.Cluster.Leader == "" {
		return fmt.Errorf("%w: %s has no leader", ErrNoQuorum, info.Config.Name)
	}
	current := 1 // the leader
	for _, p := range info.Cluster.Replicas {
		if p != nil && p.Current && !p.Offline && p.Active < 3*time.Second {
			current++
		}
	}
	if current < r/2+1 {
		return fmt.Errorf("%w: %s has %d of %d replicas current", ErrNoQuorum, info.Config.Name, current, r)
	}
	return nil
}
