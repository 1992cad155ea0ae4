package natsserver_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/mcpvault/vault/internal/vaulttest"
)

// connectAs connects as user (with the inbox prefix the vault's processes
// use for api and projector) and records asynchronous permission errors.
func connectAs(t *testing.T, env *vaulttest.Env, user string) (*nats.Conn, jetstream.JetStream, chan error) {
	t.Helper()
	errs := make(chan error, 64)
	opts := []nats.Option{nats.Timeout(2 * time.Second), nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
		select {
		case errs <- err:
		default:
		}
	})}
	if user == "api" || user == "projector" {
		opts = append(opts, nats.CustomInboxPrefix("_INBOX_"+user))
	}
	nc, err := nats.Connect(env.NATSURLAs(user), opts...)
	if err != nil {
		t.Fatalf("connect as %s: %v", user, err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return nc, js, errs
}

func short() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), 2*time.Second)
}

// seeded starts a vault and stores a server and a credential, so the event
// stream, the keys stream and the idempotency bucket all hold something.
func seeded(t *testing.T) (*vaulttest.Env, string) {
	// The data-key pool off: its background stores would change the keys
	// stream, which these tests watch for writes the permissions must stop.
	env := vaulttest.MustStart(t, vaulttest.Options{KeyPool: -1})
	srv := env.MustCreateServer(t, "u1", nil)
	r := env.Do(t, vaulttest.Request{Method: "POST", Path: "/servers/" + srv + "/credentials", User: "u1",
		Body: map[string]any{"name": "t", "bearer_token": "tok-0123456789abcdef"}, Header: map[string]string{"Idempotency-Key": "k1"}})
	if r.Status != 201 {
		t.Fatalf("create credential: %d %s", r.Status, r.Body)
	}
	return env, r.JSON(t)["id"].(string)
}

func TestAnonymousClientIsRefused(t *testing.T) {
	env := vaulttest.MustStart(t, vaulttest.Options{})
	nc, err := nats.Connect(env.NATSURLAs(""), nats.Timeout(2*time.Second))
	if err == nil {
		nc.Close()
		t.Fatal("an anonymous client connected")
	}
	if !strings.Contains(strings.ToLower(err.Error()), "authorization") {
		t.Fatalf("anonymous connect failed for another reason: %v", err)
	}
	nc, err = nats.Connect(natsURLWithPassword(env, "audit", "wrong-password"), nats.Timeout(2*time.Second))
	if err == nil {
		nc.Close()
		t.Fatal("a wrong password was accepted")
	}
}

func natsURLWithPassword(env *vaulttest.Env, user, pw string) string {
	u := env.NATSURLAs(user)
	at := strings.LastIndex(u, "@")
	return "nats://" + user + ":" + pw + u[at:]
}

func TestAuditUserReadsEventsOnly(t *testing.T) {
	env, cred := seeded(t)
	nc, js, errs := connectAs(t, env, "audit")

	// It follows vault.> live ...
	sub, err := nc.SubscribeSync("vault.>")
	if err != nil {
		t.Fatal(err)
	}
	nc.Flush()
	srv2 := env.MustCreateServer(t, "u1", nil)
	m, err := sub.NextMsg(5 * time.Second)
	if err != nil {
		t.Fatalf("audit did not see a live event: %v", err)
	}
	if !strings.Contains(m.Subject, srv2) {
		t.Fatalf("live event on %s, want the server %s", m.Subject, srv2)
	}
	// ... and reads the event stream from its start with its own consumer
	// and message gets.
	ctx, cancel := short()
	defer cancel()
	stream, err := js.Stream(ctx, env.Stream)
	if err != nil {
		t.Fatalf("audit stream info: %v", err)
	}
	first, err := stream.GetMsg(ctx, 1)
	if err != nil || !strings.Contains(string(first.Data), "mcp.server.created") {
		t.Fatalf("audit message get of seq 1: %v", err)
	}
	cons, err := stream.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatalf("audit consumer: %v", err)
	}
	batch, err := cons.Fetch(3, jetstream.FetchMaxWait(2*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for range batch.Messages() {
		n++
	}
	if n != 3 {
		t.Fatalf("audit consumer read %d of the 3 events", n)
	}

	// It cannot read a wrapped data key: no stream info, no direct get,
	// no message get, no consumer on the keys stream.
	keys := env.Stream + "_KEYS"
	keySubj := "vaultkeys." + strings.ToLower(env.Stream) + ".dek." + cred
	if _, err := js.Stream(ctx, keys); err == nil {
		t.Fatal("audit read the keys stream's info")
	}
	for _, subj := range []string{"$JS.API.DIRECT.GET." + keys + "." + keySubj, "$JS.API.STREAM.MSG.GET." + keys} {
		body := []byte(`{"last_by_subj":"` + keySubj + `"}`)
		if strings.HasPrefix(subj, "$JS.API.DIRECT") {
			body = nil
		}
		if msg, err := nc.Request(subj, body, time.Second); err == nil {
			t.Fatalf("audit got an answer from %s: %q", subj, msg.Data)
		}
	}
	if _, err := js.OrderedConsumer(ctx, keys, jetstream.OrderedConsumerConfig{}); err == nil {
		t.Fatal("audit created a consumer on the keys stream")
	}
	// Nor the idempotency bucket.
	if kv, err := js.KeyValue(ctx, env.Stream+"_IDEMPOTENCY"); err == nil {
		if _, err := kv.Keys(ctx); err == nil {
			t.Fatal("audit listed the idempotency bucket")
		}
	}
	if _, err := nc.Request("$JS.API.DIRECT.GET.KV_"+env.Stream+"_IDEMPOTENCY", []byte(`{"seq":1}`), time.Second); err == nil {
		t.Fatal("audit read the idempotency bucket")
	}
	// Nor publish: an event, a key, an idempotent answer.
	before := lastSeq(t, env)
	for _, subj := range []string{"vault." + srv2 + ".server", keySubj, "$KV." + env.Stream + "_IDEMPOTENCY.forged"} {
		if _, err := js.Publish(ctx, subj, []byte(`{"type":"mcp.server.created"}`)); err == nil {
			t.Fatalf("audit published to %s", subj)
		}
	}
	nc.Publish("vault."+srv2+".server", []byte(`{"type":"mcp.server.deleted"}`)) // core publish too
	nc.Flush()
	time.Sleep(200 * time.Millisecond)
	if after := lastSeq(t, env); after != before {
		t.Fatalf("the event stream grew from %d to %d after audit published", before, after)
	}
	// Nor change the streams.
	if _, err := js.UpdateStream(ctx, jetstream.StreamConfig{Name: env.Stream, Subjects: []string{"vault.>"}, DenyDelete: false}); err == nil {
		t.Fatal("audit updated the event stream")
	}
	if !sawPermissionError(errs) {
		t.Fatal("the server reported no permission violation to the audit client")
	}
}

func TestProjectorUserCannotAppendOrCreate(t *testing.T) {
	env, cred := seeded(t)
	_, js, _ := connectAs(t, env, "projector")
	ctx, cancel := short()
	defer cancel()
	before := lastSeq(t, env)
	if _, err := js.Publish(ctx, "vault.mcp_srv_x.server", []byte(`{}`)); err == nil {
		t.Fatal("projector appended an event")
	}
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "OTHER", Subjects: []string{"other.>"}}); err == nil {
		t.Fatal("projector created a stream")
	}
	if _, err := js.UpdateStream(ctx, jetstream.StreamConfig{Name: env.Stream, Subjects: []string{"vault.>"}}); err == nil {
		t.Fatal("projector updated the event stream")
	}
	if _, err := js.KeyValue(ctx, env.Stream+"_IDEMPOTENCY"); err == nil {
		t.Fatal("projector bound the idempotency bucket")
	}
	// It reads and destroys keys (what shredding and sweeps need).
	ctx, cancel = short()
	defer cancel()
	keys, err := js.Stream(ctx, env.Stream+"_KEYS")
	if err != nil {
		t.Fatal(err)
	}
	m, err := keys.GetLastMsgForSubject(ctx, "vaultkeys."+strings.ToLower(env.Stream)+".dek."+cred)
	if err != nil {
		t.Fatalf("projector could not read the key to destroy: %v", err)
	}
	if err := keys.SecureDeleteMsg(ctx, m.Sequence); err != nil {
		t.Fatalf("projector could not destroy a key: %v", err)
	}
	if after := lastSeq(t, env); after != before {
		t.Fatalf("event stream grew from %d to %d", before, after)
	}
}

// TestAPIAndProjectorWorkWithTheirUsers: the whole write and read path runs
// with the api and projector users (vaulttest starts them so); the
// projector's applied notifications reach the api user.
func TestAPIAndProjectorWorkWithTheirUsers(t *testing.T) {
	env, cred := seeded(t)
	r := env.Do(t, vaulttest.Request{Method: "GET", Path: "/servers", User: "u1"})
	if r.Status != 200 || !strings.Contains(string(r.Body), "mcp_srv_") {
		t.Fatalf("list servers: %d %s", r.Status, r.Body)
	}
	nc, _, _ := connectAs(t, env, "api")
	sub, err := nc.SubscribeSync("vaultapplied." + strings.ToLower(env.Stream) + ".>")
	if err != nil {
		t.Fatal(err)
	}
	// The subscription is registered before anything is published (under
	// load an unflushed SUB could arrive after the message).
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	pnc, _, _ := connectAs(t, env, "projector")
	if err := pnc.Publish("vaultapplied."+strings.ToLower(env.Stream)+".test", []byte("7")); err != nil {
		t.Fatal(err)
	}
	pnc.Flush()
	// The running projector's own notifications may come first.
	for deadline := time.Now().Add(3 * time.Second); ; {
		m, err := sub.NextMsg(time.Until(deadline))
		if err != nil {
			t.Fatalf("api did not receive the projector's notification: %v", err)
		}
		if m.Subject == "vaultapplied."+strings.ToLower(env.Stream)+".test" {
			if string(m.Data) != "7" {
				t.Fatalf("notification %q, sent 7", m.Data)
			}
			break
		}
	}
	_ = cred
	if strings.Contains(env.Logs.String(), "Permissions Violation") {
		t.Fatalf("a vault process hit a permission violation:\n%s", env.Logs.String())
	}
}

func lastSeq(t *testing.T, env *vaulttest.Env) uint64 {
	t.Helper()
	ctx, cancel := short()
	defer cancel()
	s, err := vaulttest.MustJetStream(t, env.NATSURL()).Stream(ctx, env.Stream)
	if err != nil {
		t.Fatal(err)
	}
	return s.CachedInfo().State.LastSeq
}

func sawPermissionError(errs chan error) bool {
	for {
		select {
		case err := <-errs:
			if errors.Is(err, nats.ErrPermissionViolation) || strings.Contains(err.Error(), "Permissions Violation") {
				return true
			}
		default:
			return false
		}
	}
}
