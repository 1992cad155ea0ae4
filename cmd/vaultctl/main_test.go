package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/mcpvault/vault/audit"
	"github.com/mcpvault/vault/events"
	"github.com/mcpvault/vault/eventstore"
	"github.com/mcpvault/vault/internal/natsserver"
	"github.com/mcpvault/vault/internal/vaulttest"
)

// TestMain lets the tests run vaultctl as a real process (the test binary
// re-executed), so that a tail can really be killed.
func TestMain(m *testing.M) {
	if os.Getenv("VAULTCTL_TEST_MAIN") == "1" {
		main()
		return
	}
	os.Exit(m.Run())
}

// natsEnv is an embedded JetStream server with the vault's streams and the
// environment vaultctl reads pointing at it.
type natsEnv struct {
	url   string
	dir   string
	store *eventstore.Store
	keys  *audit.Keyring
	spec  string
}

func mustNATS(t *testing.T) *natsEnv {
	t.Helper()
	dir := t.TempDir()
	ns, err := natsserver.Start(natsserver.Options{Listen: "127.0.0.1:0", StoreDir: filepath.Join(dir, "jetstream")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	st, err := eventstore.Open(context.Background(), nc, eventstore.Config{Stream: "VAULT"})
	if err != nil {
		t.Fatal(err)
	}
	spec := audit.NewKeySpec("t1")
	kr, err := audit.ParseKeyring(spec)
	if err != nil {
		t.Fatal(err)
	}
	e := &natsEnv{url: ns.ClientURL(), dir: dir, store: st, keys: kr, spec: spec}
	for k, v := range e.env() {
		t.Setenv(k, v)
	}
	return e
}

func (e *natsEnv) env() map[string]string {
	return map[string]string{"VAULT_NATS_URL": e.url, "VAULT_DATA_DIR": e.dir, "VAULT_STREAM": "VAULT",
		"VAULT_AUDIT_KEYS": e.spec, "VAULT_AUDIT_PUBLIC_KEYS": ""}
}

// vaultctl runs the CLI in process and returns its exit code and output.
func vaultctl(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	code := run(ctx, args, &out, &errb)
	return code, out.String(), errb.String()
}

// writer appends events as the vault's append path does: signed, each
// state change linked to the last message on its subject.
type writer struct {
	t    *testing.T
	e    *natsEnv
	js   jetstream.JetStream
	n    int
	last map[string]uint64 // subject -> last sequence
	body map[string][]byte
}

func newWriter(t *testing.T, e *natsEnv) *writer {
	nc, err := nats.Connect(e.url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, _ := jetstream.New(nc)
	return &writer{t: t, e: e, js: js, last: map[string]uint64{}, body: map[string][]byte{}}
}

const srvID = "mcp_srv_0196a1b2c3d4e5f60718293a4b5c6d7e"

func (w *writer) event(serverID string, ev events.Event, aggregate string, owner events.Owner) (string, []byte) {
	w.n++
	at := events.NewTime(time.Date(2026, 4, 29, 12, 0, 0, 0, time.UTC).Add(time.Duration(w.n) * time.Millisecond))
	id := fmt.Sprintf("01JSXQ6Z8Y%016d", w.n)
	body, err := events.Marshal(events.Meta{ID: id, AggregateID: aggregate, ServerID: serverID, Owner: owner, OccurredAt: at}, ev)
	if err != nil {
		w.t.Fatal(err)
	}
	return events.SubjectOf(events.Record{Meta: events.Meta{AggregateID: aggregate, ServerID: serverID}, Event: ev}), body
}

// append signs and publishes one event; it returns the sequence.
func (w *writer) append(serverID string, ev events.Event, aggregate string, owner events.Owner) uint64 {
	subject, body := w.event(serverID, ev, aggregate, owner)
	link := audit.Unchained
	if audit.Chained(ev.EventType()) {
		link = audit.After(w.last[subject], w.body[subject])
	}
	seq := w.publish(subject, body, w.e.keys.Sign(subject, body, link))
	w.last[subject], w.body[subject] = seq, body
	return seq
}

func (w *writer) publish(subject string, body []byte, h map[string]string) uint64 {
	m := nats.NewMsg(subject)
	m.Data = body
	for k, v := range h {
		m.Header.Set(k, v)
	}
	ack, err := w.js.PublishMsg(context.Background(), m)
	if err != nil {
		w.t.Fatal(err)
	}
	return ack.Sequence
}

func serverCreated() events.Event {
	return events.ServerCreated{ServerAttrs: events.ServerAttrs{Name: "Linear", ServerLabel: "linear",
		ServerURL: "https://mcp.linear.app/mcp", RequireApproval: "always", Metadata: map[string]string{}}}
}

func serverUpdated(name string) events.Event {
	return events.ServerUpdated{ChangedFields: []string{"name"}, ServerAttrs: events.ServerAttrs{Name: name, ServerLabel: "linear",
		ServerURL: "https://mcp.linear.app/mcp", RequireApproval: "always", Metadata: map[string]string{}}}
}

var alice = events.Owner{Account: "acct_a", User: "alice"}

func TestUsageAndExitCodes(t *testing.T) {
	mustNATS(t)
	if code, out, _ := vaultctl(t); code != exitUsage || !strings.Contains(out, "audit verify") {
		t.Fatalf("no arguments: %d %q", code, out)
	}
	if code, _, _ := vaultctl(t, "frobnicate"); code != exitUsage {
		t.Fatalf("unknown command: %d", code)
	}
	if code, _, _ := vaultctl(t, "audit", "tail", "--since", "yesterday"); code != exitUsage {
		t.Fatalf("bad --since: %d", code)
	}
	t.Setenv("VAULT_NATS_URL", "nats://127.0.0.1:1")
	if code, _, errs := vaultctl(t, "audit", "verify"); code != exitUnavailable {
		t.Fatalf("NATS down: %d %s", code, errs)
	}
}

func verifyJSON(t *testing.T, args ...string) (int, verifyResult) {
	t.Helper()
	code, out, errs := vaultctl(t, append([]string{"--json", "audit", "verify"}, args...)...)
	var res verifyResult
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("verify output %q (%s): %v", out, errs, err)
	}
	return code, res
}

// TestVerifyCatchesForgeries appends a genuine history, then forges events
// the three ways an attacker with publish rights on vault.> can: a raw
// publish, a replayed old event, a reordered copy. verify names the first
// break with its sequence and exits 1; reject marks it, after which verify
// passes again until the next forgery.
func TestVerifyCatchesForgeries(t *testing.T) {
	e := mustNATS(t)
	w := newWriter(t, e)
	credID := "mcp_cred_0196a1b2c3d4e5f60718293a4b5c6d7f"
	w.append(srvID, serverCreated(), srvID, alice)
	created := w.append(srvID, events.CredentialCreated{AuthType: "none", HeaderNames: []string{}}, credID, alice)
	w.append(srvID, events.CredentialUsed{Operation: "test_server", Outcome: "connected", TargetHost: "h"}, credID, alice)
	w.append(srvID, serverUpdated("Linear 2"), srvID, alice)
	revoked := w.append(srvID, events.CredentialRevoked{}, credID, alice)

	code, res := verifyJSON(t)
	if code != exitOK || !res.OK || res.Checked != 5 || res.Signed != 5 || len(res.Invalid) != 0 {
		t.Fatalf("genuine history: exit %d %+v", code, res)
	}
	if code, out, _ := vaultctl(t, "audit", "verify"); code != 0 || !strings.Contains(out, "ok: 5 events verified up to sequence 5") {
		t.Fatalf("text verify: %d %q", code, out)
	}

	// Rejecting a sequence that verifies is refused.
	if code, _, _ := vaultctl(t, "audit", "reject", "2"); code != exitProblem {
		t.Fatalf("reject of a valid event: %d", code)
	}

	js := vaulttest.MustJetStream(t, e.url)
	get := func(seq uint64) *jetstream.RawStreamMsg {
		s, _ := js.Stream(context.Background(), "VAULT")
		m, err := s.GetMsg(context.Background(), seq)
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	republish := func(m *jetstream.RawStreamMsg, keepHeaders bool) uint64 {
		h := map[string]string{}
		if keepHeaders {
			for k := range m.Header {
				h[k] = m.Header.Get(k)
			}
		}
		return w.publish(m.Subject, m.Data, h)
	}

	forgeries := []struct {
		name    string
		forge   func() uint64
		problem string
	}{
		{"raw publish to vault.>", func() uint64 {
			// a well-formed revoke of another credential, as the API's NATS user could publish it
			subject, body := w.event(srvID, events.CredentialDeleted{}, credID, alice)
			return w.publish(subject, body, nil)
		}, "not signed"},
		{"replayed old event", func() uint64 {
			return republish(get(created), true) // the credential's creation again, after its revoke
		}, "chain link"},
		{"reordered copy", func() uint64 {
			// the revoke and the creation copied in the other order
			first := republish(get(revoked), true)
			republish(get(created), true)
			return first
		}, "chain link"},
	}
	for _, f := range forgeries {
		seq := f.forge()
		code, res := verifyJSON(t)
		if code != exitProblem || res.OK || len(res.Breaks) != 1 || res.Breaks[0].Seq != seq ||
			!strings.Contains(res.Breaks[0].Problem, f.problem) {
			t.Fatalf("%s at %d: exit %d %+v", f.name, seq, code, res)
		}
		code, out, _ := vaultctl(t, "audit", "verify")
		if code != exitProblem || !strings.Contains(out, fmt.Sprintf("BREAK     sequence %d ", seq)) {
			t.Fatalf("%s: text verify %d %q", f.name, code, out)
		}
		// Mark every break so far (a reordered copy is two breaks).
		for {
			_, res := verifyJSON(t)
			if res.OK {
				break
			}
			if code, out, errs := vaultctl(t, "audit", "reject", strconv.FormatUint(res.Breaks[0].Seq, 10)); code != 0 {
				t.Fatalf("%s: reject %d: %d %s %s", f.name, res.Breaks[0].Seq, code, out, errs)
			}
		}
		// Rejecting twice is not an error and appends nothing.
		last, _ := e.store.LastSeq(context.Background())
		if code, out, _ := vaultctl(t, "audit", "reject", strconv.FormatUint(seq, 10)); code != 0 || !strings.Contains(out, "already rejected") {
			t.Fatalf("second reject: %d %q", code, out)
		}
		if now, _ := e.store.LastSeq(context.Background()); now != last {
			t.Fatalf("second reject appended: %d -> %d", last, now)
		}
	}
	code, res = verifyJSON(t)
	if code != 0 || !res.OK || len(res.Rejected) != 4 {
		t.Fatalf("after the rejections: %d %+v", code, res)
	}
	// A forged rejection rejects nothing and is itself a break.
	subject, body := w.event(srvID, events.CredentialDeleted{}, credID, alice)
	forged := w.publish(subject, body, nil)
	rb, _ := events.Marshal(events.Meta{ID: "01JSXQ6Z8Y9999999999999999", AggregateID: credID, ServerID: srvID, Owner: events.Owner{Account: "operator"}, OccurredAt: events.NewTime(time.Now())},
		events.AuditRejected{Sequence: forged, Subject: subject, Problem: "not signed", BodySHA256: audit.Hash(body)})
	w.publish(events.RejectionSubject(forged), rb, nil)
	code, res = verifyJSON(t, "--all")
	if code != exitProblem || len(res.Breaks) != 2 || res.Breaks[0].Seq != forged {
		t.Fatalf("forged rejection: %d %+v", code, res)
	}
}

// TestVerifyUnsignedUntil: a stream written before signing existed verifies
// with --unsigned-until its last legacy sequence, and only then.
func TestVerifyUnsignedUntil(t *testing.T) {
	e := mustNATS(t)
	w := newWriter(t, e)
	subject, body := w.event(srvID, serverCreated(), srvID, alice)
	w.last[subject], w.body[subject] = w.publish(subject, body, nil), body
	w.append(srvID, serverUpdated("x"), srvID, alice)
	if code, res := verifyJSON(t); code != exitProblem || res.Breaks[0].Seq != 1 {
		t.Fatalf("legacy without the flag: %d %+v", code, res)
	}
	if code, res := verifyJSON(t, "--unsigned-until", "1"); code != 0 || !res.OK {
		t.Fatalf("legacy with the flag: %d %+v", code, res)
	}
}

// tailProc is vaultctl audit tail running as its own process.
type tailProc struct {
	cmd   *exec.Cmd
	mu    sync.Mutex
	lines []string
	done  chan struct{}
}

func startTail(t *testing.T, e *natsEnv, args ...string) *tailProc {
	t.Helper()
	cmd := exec.Command(os.Args[0], append([]string{"audit", "tail"}, args...)...)
	cmd.Env = append(os.Environ(), "VAULTCTL_TEST_MAIN=1")
	for k, v := range e.env() {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &tailProc{cmd: cmd, done: make(chan struct{})}
	go func() {
		defer close(p.done)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			p.mu.Lock()
			p.lines = append(p.lines, sc.Text())
			p.mu.Unlock()
		}
	}()
	t.Cleanup(func() { cmd.Process.Kill(); <-p.done; cmd.Wait() })
	return p
}

func (p *tailProc) count() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.lines)
}

// TestTailKilledAndRestartedMissesAndRepeatsNothing: events are appended
// while a tail runs; it is stopped with SIGTERM mid-stream and started
// again with the same durable name; together the two runs print every
// sequence exactly once, in order.
func TestTailKilledAndRestartedMissesAndRepeatsNothing(t *testing.T) {
	e := mustNATS(t)
	w := newWriter(t, e)
	const total = 600
	w.append(srvID, serverCreated(), srvID, alice)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 2; i <= total; i++ {
			owner := alice
			if i%3 == 0 {
				owner = events.Owner{Account: "acct_b"}
			}
			w.append(srvID, serverUpdated(fmt.Sprintf("n%d", i)), srvID, owner)
			if i%50 == 0 {
				time.Sleep(20 * time.Millisecond)
			}
		}
	}()
	first := startTail(t, e, "--name", "kill-test")
	vaulttest.Eventually(t, 30*time.Second, func() bool { return first.count() >= 100 })
	if err := first.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	<-first.done
	if err := first.cmd.Wait(); err != nil {
		t.Fatalf("the stopped tail exited with %v", err)
	}
	n1 := first.count()
	wg.Wait()
	if n1 >= total {
		t.Fatalf("the tail was not stopped mid-stream (%d lines)", n1)
	}
	second := startTail(t, e, "--name", "kill-test", "--once")
	<-second.done
	if err := second.cmd.Wait(); err != nil {
		t.Fatalf("second tail: %v", err)
	}
	all := append(append([]string{}, first.lines...), second.lines...)
	if len(all) != total {
		t.Fatalf("%d + %d lines, want %d in all", n1, second.count(), total)
	}
	for i, l := range all {
		f := strings.Fields(l)
		if len(f) < 6 || f[0] != strconv.Itoa(i+1) {
			t.Fatalf("line %d is %q, want sequence %d", i, l, i+1)
		}
		if (f[2] != events.TypeServerUpdated && f[2] != events.TypeServerCreated) || f[len(f)-1] != "signed=t1" {
			t.Fatalf("line %q", l)
		}
	}
	// --owner filters; --since starts a new consumer at a sequence.
	code, out, _ := vaultctl(t, "--json", "audit", "tail", "--name", "owner-b", "--owner", "acct_b", "--since", "300", "--once")
	if code != 0 {
		t.Fatalf("filtered tail: %d", code)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != (total-300+1)/3+1 && len(lines) != (total-300)/3+1 {
		t.Fatalf("%d lines for acct_b from 300", len(lines))
	}
	for _, l := range lines {
		var v line
		if err := json.Unmarshal([]byte(l), &v); err != nil || v.Owner.Account != "acct_b" || v.Seq < 300 {
			t.Fatalf("filtered line %q (%v)", l, err)
		}
	}
}
