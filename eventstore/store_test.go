package eventstore_test

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/mcpvault/vault/eventstore"
	"github.com/mcpvault/vault/internal/faultnet"
	"github.com/mcpvault/vault/internal/natsserver"
)

func MustServer(tb testing.TB) *server.Server {
	tb.Helper()
	srv, err := natsserver.Start(natsserver.Options{Listen: "127.0.0.1:0", StoreDir: tb.TempDir()})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(srv.Shutdown)
	return srv
}

func MustStoreAt(tb testing.TB, url string, cfg eventstore.Config) *eventstore.Store {
	tb.Helper()
	nc, err := eventstore.Connect(url, "test")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(nc.Close)
	if cfg.Stream == "" {
		cfg.Stream = "VAULT"
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := eventstore.Open(ctx, nc, cfg)
	if err != nil {
		tb.Fatal(err)
	}
	return st
}

func MustStore(tb testing.TB) *eventstore.Store {
	tb.Helper()
	return MustStoreAt(tb, MustServer(tb).ClientURL(), eventstore.Config{})
}

func mustAppend(tb testing.TB, st *eventstore.Store, subject, data, id string, opts ...eventstore.AppendOption) eventstore.Ack {
	tb.Helper()
	ack, err := st.Append(context.Background(), subject, []byte(data), append(opts, eventstore.MsgID(id))...)
	if err != nil {
		tb.Fatalf("append %s %s: %v", subject, id, err)
	}
	return ack
}

// An expectation is on one literal subject: writes to other subjects do
// not disturb it, a stale one is refused, and it may name another subject
// than the one written (a credential created under its server's version).
func TestAppendExpectsLastSequenceOfLiteralSubject(t *testing.T) {
	st := MustStore(t)
	ctx := context.Background()
	srv := "vault.s1.server"
	a1 := mustAppend(t, st, srv, "created", "m1", eventstore.ExpectLast(srv, 0))
	if _, err := st.Append(ctx, srv, []byte("x"), eventstore.MsgID("m2"), eventstore.ExpectLast(srv, 0)); !errors.Is(err, eventstore.ErrConflict) {
		t.Fatalf("second create of one subject: got %v, want conflict", err)
	}
	// Credentials expect the server's version; they never disturb each other.
	c1 := mustAppend(t, st, "vault.s1.credential.c1", "c1", "m3", eventstore.ExpectLast(srv, a1.Seq))
	c2 := mustAppend(t, st, "vault.s1.credential.c2", "c2", "m4", eventstore.ExpectLast(srv, a1.Seq))
	if c2.Seq <= c1.Seq {
		t.Fatalf("sequences %d, %d", c1.Seq, c2.Seq)
	}
	// The server's own update still expects its own last sequence, which
	// the credentials did not change.
	u := mustAppend(t, st, srv, "updated", "m5", eventstore.ExpectLast(srv, a1.Seq))
	// Now a credential decided on the old version is refused.
	if _, err := st.Append(ctx, "vault.s1.credential.c3", []byte("c3"), eventstore.MsgID("m6"), eventstore.ExpectLast(srv, a1.Seq)); !errors.Is(err, eventstore.ErrConflict) {
		t.Fatalf("credential on a stale server version: got %v, want conflict", err)
	}
	mustAppend(t, st, "vault.s1.credential.c3", "c3", "m7", eventstore.ExpectLast(srv, u.Seq))
	// A message id already stored is not stored again: the ack says so
	// and carries the original sequence.
	d1 := mustAppend(t, st, "vault.s3.server", "6", "dup")
	d2 := mustAppend(t, st, "vault.s3.server", "6", "dup")
	if d1.Duplicate || !d2.Duplicate || d1.Seq != d2.Seq {
		t.Fatalf("duplicate publish: %+v then %+v", d1, d2)
	}
	if _, err := st.Append(ctx, "vault.s4.server", []byte("x")); err == nil {
		t.Fatal("an append without a message id was accepted")
	}
}

// The loads the command side makes: first, last and next on a subject,
// and a message found by its id, all through the stream leader.
func TestLeaderGets(t *testing.T) {
	st := MustStore(t)
	ctx := context.Background()
	if _, err := st.Last(ctx, "vault.x.server"); !errors.Is(err, eventstore.ErrNotFound) {
		t.Fatalf("last of an empty subject: %v", err)
	}
	start := time.Now()
	var seqs []uint64
	for i := 0; i < 5; i++ {
		seqs = append(seqs, mustAppend(t, st, "vault.x.server", strconv.Itoa(i), "x"+strconv.Itoa(i)).Seq)
		mustAppend(t, st, "vault.y.server", "other", "y"+strconv.Itoa(i))
	}
	first, err := st.First(ctx, "vault.x.server")
	if err != nil || first.Seq != seqs[0] || string(first.Data) != "0" {
		t.Fatalf("first = %+v, %v", first, err)
	}
	last, err := st.Last(ctx, "vault.x.server")
	if err != nil || last.Seq != seqs[4] || string(last.Data) != "4" || last.Header.Get(jetstream.MsgIDHeader) != "x4" {
		t.Fatalf("last = %+v, %v", last, err)
	}
	next, err := st.Next(ctx, "vault.x.server", seqs[1]+1)
	if err != nil || next.Seq != seqs[2] {
		t.Fatalf("next = %+v, %v", next, err)
	}
	m, found, err := st.FindMsgID(ctx, "vault.x.server", "x3", start.Add(-time.Second))
	if err != nil || !found || m.Seq != seqs[3] {
		t.Fatalf("FindMsgID = %+v, %v, %v", m, found, err)
	}
	if _, found, err := st.FindMsgID(ctx, "vault.x.server", "nope", start.Add(-time.Second)); err != nil || found {
		t.Fatalf("FindMsgID of a missing id = %v, %v", found, err)
	}
}

// A publish whose acknowledgement is lost is published again with the same
// message id until the stream answers: the caller learns it was stored
// (once), never "not stored".
func TestAppendResolvesLostAcks(t *testing.T) {
	srv := MustServer(t)
	proxy := faultnet.MustListen(t, srv.Addr().String())
	st := MustStoreAt(t, "nats://"+proxy.Addr(), eventstore.Config{AttemptTimeout: 200 * time.Millisecond})
	direct := MustStoreAt(t, srv.ClientURL(), eventstore.Config{})
	ctx := context.Background()

	for _, tc := range []struct {
		name    string
		subject string
		expect  []eventstore.AppendOption
	}{
		// Expectation on another subject: the repeat passes it and is
		// recognised by its message id.
		{"credential", "vault.s.credential.c", []eventstore.AppendOption{eventstore.ExpectLast("vault.s.server", 0)}},
		// Expectation on its own subject: the repeat fails it (a single
		// server checks it before the id), and the stream is asked.
		{"server", "vault.t.server", []eventstore.AppendOption{eventstore.ExpectLast("vault.t.server", 0)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			proxy.HoldReplies()
			done := make(chan struct{})
			var (
				ack eventstore.Ack
				err error
			)
			go func() {
				defer close(done)
				ack, err = st.Append(ctx, tc.subject, []byte("v"), append(tc.expect, eventstore.MsgID("id-"+tc.name))...)
			}()
			// Several attempts time out while the message is stored.
			deadline := time.Now().Add(5 * time.Second)
			for {
				if m, lerr := direct.Last(ctx, tc.subject); lerr == nil && m.Header.Get(jetstream.MsgIDHeader) == "id-"+tc.name {
					break
				}
				if time.Now().After(deadline) {
					t.Fatal("the held publish never reached the stream")
				}
				time.Sleep(10 * time.Millisecond)
			}
			time.Sleep(500 * time.Millisecond)
			proxy.Release()
			<-done
			if err != nil {
				t.Fatalf("append with lost acks: %v", err)
			}
			m, lerr := direct.Last(ctx, tc.subject)
			if lerr != nil || m.Seq != ack.Seq {
				t.Fatalf("ack %+v, stream's last on subject %+v (%v)", ack, m, lerr)
			}
			if first, _ := direct.First(ctx, tc.subject); first.Seq != m.Seq {
				t.Fatalf("stored twice: first %d, last %d", first.Seq, m.Seq)
			}
		})
	}

	// When the answer never comes before the caller's deadline, the outcome
	// is unknown — not "not stored".
	proxy.HoldReplies()
	actx, cancel := context.WithTimeout(ctx, time.Second)
	_, err := st.Append(actx, "vault.u.server", []byte("v"), eventstore.MsgID("id-u"))
	cancel()
	proxy.Release()
	if !errors.Is(err, eventstore.ErrUnknownOutcome) {
		t.Fatalf("append without an answer: %v, want unknown outcome", err)
	}
	if _, found, ferr := direct.FindMsgID(ctx, "vault.u.server", "id-u", time.Now().Add(-time.Minute)); ferr != nil || !found {
		t.Fatalf("the message with the unknown outcome: found %v, %v", found, ferr)
	}
}

// An acknowledgement lost for longer than the deduplication window: the
// repeats of a message whose expectation is on another subject (which does
// not stop them) look for it first, so it is stored once and acknowledged
// with its sequence.
func TestAppendLostAckBeyondDedupWindow(t *testing.T) {
	srv := MustServer(t)
	proxy := faultnet.MustListen(t, srv.Addr().String())
	cfg := eventstore.Config{Duplicates: 300 * time.Millisecond, AttemptTimeout: 200 * time.Millisecond}
	st := MustStoreAt(t, "nats://"+proxy.Addr(), cfg)
	direct := MustStoreAt(t, srv.ClientURL(), cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	subject := "vault.s.credential.c"
	proxy.HoldReplies()
	done := make(chan struct{})
	var (
		ack eventstore.Ack
		err error
	)
	go func() {
		defer close(done)
		ack, err = st.Append(ctx, subject, []byte("v"), eventstore.MsgID("lost"), eventstore.ExpectLast("vault.s.server", 0))
	}()
	var stored eventstore.Msg
	for {
		if m, lerr := direct.Last(ctx, subject); lerr == nil {
			stored = m
			break
		}
		if ctx.Err() != nil {
			t.Fatal("the held publish never reached the stream")
		}
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(4 * cfg.Duplicates) // attempts time out; the window passes
	proxy.Release()
	<-done
	if err != nil || ack.Seq != stored.Seq {
		t.Fatalf("append after the window: %+v, %v; stored at %d", ack, err, stored.Seq)
	}
	if last, _ := direct.Last(ctx, subject); last.Seq != stored.Seq {
		t.Fatalf("stored twice: at %d and %d", stored.Seq, last.Seq)
	}
}

// A write refused for certain is reported as such at once.
func TestAppendUnavailableIsCertain(t *testing.T) {
	srv := MustServer(t)
	st := MustStoreAt(t, srv.ClientURL(), eventstore.Config{})
	srv.Shutdown()
	srv.WaitForShutdown()
	for st.NC.IsConnected() { // a publish sent before the client noticed is of unknown outcome
		time.Sleep(5 * time.Millisecond)
	}
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	_, err := st.Append(ctx, "vault.s.server", []byte("x"), eventstore.MsgID("m"))
	if !errors.Is(err, eventstore.ErrUnavailable) {
		t.Fatalf("append with NATS down: %v, want unavailable", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("took %v", d)
	}
}

func TestDestroyKey(t *testing.T) {
	st := MustStore(t)
	ctx := context.Background()
	if err := st.PutKey(ctx, "c1", []byte("wrapped")); err != nil {
		t.Fatal(err)
	}
	got, err := st.GetKey(ctx, "c1")
	if err != nil || string(got) != "wrapped" {
		t.Fatalf("GetKey = %q, %v", got, err)
	}
	var wg sync.WaitGroup
	for i := 0; i < 4; i++ { // the API and the projector may destroy at once
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := st.DestroyKey(ctx, "c1"); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if _, err := st.GetKey(ctx, "c1"); !errors.Is(err, eventstore.ErrKeyNotFound) {
		t.Fatalf("after destroy: %v", err)
	}
}

// Group commit keeps every append's own guarantees: concurrent appends to
// different subjects all succeed once, a stale expectation fails only its
// own append (the batch it was in is refused and its other messages go on
// alone), appends expecting one subject that none of them writes (creates
// under one server) share batches, and a retried message id is stored once.
func TestGroupCommit(t *testing.T) {
	st := MustStoreAt(t, MustServer(t).ClientURL(), eventstore.Config{GroupCommit: true})
	defer st.Close()
	ctx := context.Background()
	const n = 200
	type res struct {
		seq uint64
		err error
	}
	out := make(chan res, 3*n)
	srv0 := mustAppend(t, st, "vault.hot.server", "created", "hot")
	for i := 0; i < n; i++ {
		go func() {
			subj := "vault.g" + strconv.Itoa(i) + ".server"
			ack, err := st.Append(ctx, subj, []byte("x"), eventstore.MsgID("msg-"+subj), eventstore.ExpectLast(subj, 0))
			out <- res{ack.Seq, err}
			// A second create of the same subject must conflict.
			_, err = st.Append(ctx, subj, []byte("y"), eventstore.MsgID("msg2-"+subj), eventstore.ExpectLast(subj, 0))
			out <- res{0, err}
			// Creates under one server never conflict with each other.
			cred := "vault.hot.credential.c" + strconv.Itoa(i)
			ack, err = st.Append(ctx, cred, []byte("c"), eventstore.MsgID("msg-"+cred), eventstore.ExpectLast("vault.hot.server", srv0.Seq))
			out <- res{ack.Seq, err}
		}()
	}
	seqs := map[uint64]bool{}
	conflicts := 0
	for i := 0; i < 3*n; i++ {
		r := <-out
		switch {
		case errors.Is(r.err, eventstore.ErrConflict):
			conflicts++
		case r.err != nil:
			t.Fatal(r.err)
		default:
			if seqs[r.seq] {
				t.Fatalf("sequence %d given twice", r.seq)
			}
			seqs[r.seq] = true
		}
	}
	if len(seqs) != 2*n || conflicts != n {
		t.Fatalf("%d stored, %d conflicts; want %d and %d", len(seqs), conflicts, 2*n, n)
	}
	if last, _ := st.LastSeq(ctx); last != 2*n+1 {
		t.Fatalf("stream holds %d messages, want %d", last, 2*n+1)
	}
	gs := st.GroupStats()
	t.Logf("group commit: %+v", gs)
	if gs.Batches == 0 || gs.Batched < 2*gs.Batches {
		t.Fatalf("no atomic batch was committed: %+v", gs)
	}
	d := mustAppend(t, st, "vault.g0.server", "x", "msg-vault.g0.server")
	if !d.Duplicate {
		t.Fatalf("retried msg id stored again: %+v", d)
	}
	// Concurrent conditional writes of ONE subject decided on one version:
	// exactly one wins (no lost update inside a batch).
	base := mustAppend(t, st, "vault.one.server", "v0", "one-0")
	wins := make(chan error, 16)
	for i := 0; i < 16; i++ {
		go func() {
			_, err := st.Append(ctx, "vault.one.server", []byte("u"), eventstore.MsgID("one-u"+strconv.Itoa(i)), eventstore.ExpectLast("vault.one.server", base.Seq))
			wins <- err
		}()
	}
	ok := 0
	for i := 0; i < 16; i++ {
		if err := <-wins; err == nil {
			ok++
		} else if !errors.Is(err, eventstore.ErrConflict) {
			t.Fatal(err)
		}
	}
	if ok != 1 {
		t.Fatalf("%d of 16 updates decided on one version were stored", ok)
	}
	// Keys go through their own committer.
	var wg sync.WaitGroup
	for i := 0; i < 32; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			id := "k" + strconv.Itoa(i)
			if err := st.PutKey(ctx, id, []byte("w-"+id)); err != nil {
				t.Error(err)
				return
			}
			if got, err := st.GetKey(ctx, id); err != nil || string(got) != "w-"+id {
				t.Errorf("key %s: %q %v", id, got, err)
			}
		}()
	}
	wg.Wait()
}

// A batch whose acknowledgement is lost is not an error for its messages:
// each goes on alone with its outcome unknown, and the stream's answers
// (a duplicate for what the batch stored) say each was stored once.
func TestGroupCommitLostBatchAck(t *testing.T) {
	srv := MustServer(t)
	proxy := faultnet.MustListen(t, srv.Addr().String())
	st := MustStoreAt(t, "nats://"+proxy.Addr(), eventstore.Config{GroupCommit: true, AttemptTimeout: 300 * time.Millisecond})
	defer st.Close()
	direct := MustStoreAt(t, srv.ClientURL(), eventstore.Config{})
	ctx := context.Background()
	base := mustAppend(t, st, "vault.lost.server", "created", "lost-0")

	proxy.HoldReplies()
	const n = 24
	type res struct {
		ack eventstore.Ack
		err error
	}
	out := make(chan res, n)
	for i := 0; i < n; i++ {
		go func() {
			subj := "vault.lost.credential.c" + strconv.Itoa(i)
			ack, err := st.Append(ctx, subj, []byte("c"), eventstore.MsgID("lost-"+subj), eventstore.ExpectLast("vault.lost.server", base.Seq))
			out <- res{ack, err}
		}()
	}
	// Everything reaches the stream while no answer comes back.
	vaulttestEventually(t, func() bool {
		last, err := direct.LastSeq(ctx)
		return err == nil && last >= base.Seq+n
	})
	time.Sleep(700 * time.Millisecond) // several attempts time out
	proxy.Release()
	seqs := map[uint64]bool{}
	for i := 0; i < n; i++ {
		r := <-out
		if r.err != nil {
			t.Fatalf("an append whose batch lost its ack: %v", r.err)
		}
		seqs[r.ack.Seq] = true
	}
	last, err := direct.LastSeq(ctx)
	if err != nil || last != base.Seq+n || len(seqs) != n {
		t.Fatalf("stream ends at %d (want %d), %d distinct sequences answered (want %d)", last, base.Seq+n, len(seqs), n)
	}
	gs := st.GroupStats()
	t.Logf("group commit with a lost ack: %+v", gs)
	if gs.Fallbacks == 0 {
		t.Fatalf("no batch lost its ack: the test did not exercise the batch path (%+v)", gs)
	}
}

func vaulttestEventually(tb testing.TB, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatal("condition not met within 10 s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// JetStream remembers a message id for its deduplication window even after
// the message is destroyed: a key stored, destroyed and stored again under
// the same credential id (a retry of a create that certainly failed) must
// really be stored, not acknowledged as a duplicate.
func TestPutKeyAfterDestroyWithinDedupWindow(t *testing.T) {
	st := MustStore(t)
	ctx := context.Background()
	const id = "mcp_cred_0000000000000000000000000000abcd"
	if err := st.PutKey(ctx, id, []byte(`{"v":1}`)); err != nil {
		t.Fatal(err)
	}
	if err := st.DestroyKey(ctx, id); err != nil {
		t.Fatal(err)
	}
	if err := st.PutKey(ctx, id, []byte(`{"v":2}`)); err != nil {
		t.Fatal(err)
	}
	got, err := st.GetKey(ctx, id)
	if err != nil || string(got) != `{"v":2}` {
		t.Fatalf("key after destroy and put again: %q, %v", got, err)
	}
}

// PutKeys and PutKeysAtomic store a group of keys with one wait for all
// acknowledgements and report each key's sequence.
func TestPutKeys(t *testing.T) {
	st := MustStore(t)
	ctx := context.Background()
	var keys []eventstore.NewKey
	for i := range 40 {
		keys = append(keys, eventstore.NewKey{CredentialID: "mcp_cred_00000000000000000000000000000" + strconv.Itoa(100+i),
			Wrapped: []byte(strconv.Itoa(i))})
	}
	for _, put := range []func(context.Context, []eventstore.NewKey) ([]uint64, []error){st.PutKeys, st.PutKeysAtomic} {
		seqs, errs := put(ctx, keys)
		for i, err := range errs {
			if err != nil {
				t.Fatalf("key %d: %v", i, err)
			}
		}
		for i, k := range keys {
			got, err := st.GetKey(ctx, k.CredentialID)
			if err != nil || string(got) != strconv.Itoa(i) {
				t.Fatalf("key %d: %q, %v", i, got, err)
			}
		}
		// Each reported sequence is the key's: destroying it by sequence
		// removes exactly that key.
		if err := st.DestroyKeyVersion(ctx, seqs[7]); err != nil {
			t.Fatal(err)
		}
		if _, err := st.GetKey(ctx, keys[7].CredentialID); !errors.Is(err, eventstore.ErrKeyNotFound) {
			t.Fatalf("key 7 after destroying its sequence: %v", err)
		}
		for i, k := range keys {
			if _, err := st.GetKey(ctx, k.CredentialID); i != 7 && err != nil {
				t.Fatalf("key %d after destroying key 7: %v", i, err)
			}
		}
		keys = keys[:len(keys)-1] // the second round stores new versions
		for i := range keys {
			keys[i].CredentialID += "0"
		}
	}
}

// Grouped appends (use records: no expectation) share atomic batches even
// with group commit off, several on one subject in one batch, and each
// subject keeps the order in which its appends were sent.
func TestGroupedAppends(t *testing.T) {
	st := MustStoreAt(t, MustServer(t).ClientURL(), eventstore.Config{})
	defer st.Close()
	ctx := context.Background()
	const workers, per = 16, 40
	var wg sync.WaitGroup
	errs := make(chan error, workers*per)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Four subjects, each written by four workers in turn.
			subj := "vault.s.credential.c" + strconv.Itoa(w%4) + ".used"
			for i := range per {
				id := fmt.Sprintf("use-%d-%d", w, i)
				if _, err := st.Append(ctx, subj, []byte(id), eventstore.MsgID(id), eventstore.Grouped()); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if last, _ := st.LastSeq(ctx); last != workers*per {
		t.Fatalf("stream holds %d messages, want %d", last, workers*per)
	}
	gs := st.GroupStats()
	t.Logf("grouped: %+v", gs)
	if gs.Batches == 0 || gs.Batched < 2*gs.Batches {
		t.Fatalf("no atomic batch was committed: %+v", gs)
	}
	// Per worker, its records are stored in the order it sent them.
	stream, err := st.JS.Stream(ctx, "VAULT")
	if err != nil {
		t.Fatal(err)
	}
	next := map[int]int{}
	for seq := uint64(1); seq <= workers*per; seq++ {
		m, err := stream.GetMsg(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		var w, i int
		if _, err := fmt.Sscanf(string(m.Data), "use-%d-%d", &w, &i); err != nil {
			t.Fatal(err)
		}
		if i != next[w] {
			t.Fatalf("worker %d: record %d stored before %d", w, i, next[w])
		}
		next[w]++
	}
}
