package e2e

import (
	"bytes"
	"context"
	"database/sql"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/oklog/ulid/v2"

	"github.com/mcpvault/vault/domain"
	"github.com/mcpvault/vault/events"
	"github.com/mcpvault/vault/eventstore"
	"github.com/mcpvault/vault/internal/natsserver"
	"github.com/mcpvault/vault/internal/vaulttest"
	"github.com/mcpvault/vault/service"
)

// With NATS stopped every write answers 503 service_unavailable_error
// within 5 s and stores nothing (no event, no data key, no remembered
// idempotent answer, no read model change), reads keep answering from the
// read model, /readyz says why it is not ready, and everything recovers by
// itself once NATS is back.
func TestNATSOutage(t *testing.T) {
	env := vaulttest.MustStart(t, vaulttest.Options{})
	sid := env.MustCreateServer(t, "", nil)
	cid := env.MustCreateCredential(t, "", sid, map[string]any{"bearer_token": "tok-outage-0123456789"})["id"].(string)
	lcWaitCaughtUp(t, env, env.ReadModel)
	keysStream := env.Stream + "_KEYS"
	eventsBefore := lcMsgCount(t, env.NATSURL(), env.Stream)
	keysBefore := lcMsgCount(t, env.NATSURL(), keysStream)
	dumpBefore := lcDump(t, env.ReadModel)
	getBefore := env.Do(t, vaulttest.Request{Method: "GET", Path: "/servers/" + sid})

	env.StopNATS()
	newServer := map[string]any{"name": "during outage", "server_label": "o", "server_url": "https://o.example.com/mcp"}
	writes := []vaulttest.Request{
		{Method: "POST", Path: "/servers", Body: newServer},
		{Method: "POST", Path: "/servers", Body: newServer, Header: map[string]string{"Idempotency-Key": "outage-1"}},
		{Method: "POST", Path: "/servers/" + sid, Body: map[string]any{"name": "renamed during outage"}},
		{Method: "POST", Path: "/servers/" + sid + "/credentials", Body: map[string]any{"bearer_token": "tok-during-outage-123"}},
		{Method: "POST", Path: "/servers/" + sid + "/credentials/" + cid + "/revoke"},
		{Method: "DELETE", Path: "/servers/" + sid + "/credentials/" + cid},
		{Method: "DELETE", Path: "/servers/" + sid},
	}
	type outcome struct {
		resp vaulttest.Response
		took time.Duration
	}
	out := make([]outcome, len(writes))
	var wg sync.WaitGroup
	for i, w := range writes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			start := time.Now()
			out[i] = outcome{env.Do(t, w), time.Since(start)}
		}()
	}
	wg.Wait()
	var slowest time.Duration
	for i, o := range out {
		w := writes[i]
		if o.resp.Status != http.StatusServiceUnavailable || lcErrType(t, o.resp) != "service_unavailable_error" {
			t.Errorf("%s %s with NATS down: %d %s", w.Method, w.Path, o.resp.Status, o.resp.Body)
		}
		if o.took >= 5*time.Second {
			t.Errorf("%s %s took %s to answer", w.Method, w.Path, o.took)
		}
		slowest = max(slowest, o.took)
	}

	// Reads keep answering from the read model.
	start := time.Now()
	get := env.Do(t, vaulttest.Request{Method: "GET", Path: "/servers/" + sid})
	list := env.Do(t, vaulttest.Request{Method: "GET", Path: "/servers/" + sid + "/credentials"})
	readTook := time.Since(start)
	if get.Status != http.StatusOK || !bytes.Equal(get.Body, getBefore.Body) || list.Status != http.StatusOK {
		t.Fatalf("reads with NATS down: %d %s / %d %s", get.Status, get.Body, list.Status, list.Body)
	}
	// /readyz says why.
	ready := env.Do(t, vaulttest.Request{Method: "GET", Path: "!/readyz", Key: "-"})
	rb := ready.JSON(t)
	stream, _ := rb["stream"].(map[string]any)
	if ready.Status != http.StatusServiceUnavailable || rb["status"] != "not_ready" || stream["ok"] != false || stream["reason"] == "" || stream["reason"] == nil {
		t.Fatalf("/readyz with NATS down: %d %s", ready.Status, ready.Body)
	}
	t.Logf("NATS down: %d writes answered 503 (slowest %s), 2 reads answered 200 in %s, /readyz 503 %s",
		len(writes), slowest.Round(time.Millisecond), readTook.Round(time.Millisecond), ready.Body)

	// Recovery by itself.
	env.StartNATS()
	start = time.Now()
	var created vaulttest.Response
	statuses := map[int]int{}
	vaulttest.Eventually(t, 30*time.Second, func() bool {
		created = env.Do(t, vaulttest.Request{Method: "POST", Path: "/servers", Body: newServer})
		statuses[created.Status]++
		return created.Status != http.StatusServiceUnavailable
	})
	if created.Status != http.StatusCreated {
		t.Fatalf("first write after NATS came back: %d %s", created.Status, created.Body)
	}
	vaulttest.Eventually(t, 30*time.Second, func() bool {
		return env.Do(t, vaulttest.Request{Method: "GET", Path: "!/readyz", Key: "-"}).Status == http.StatusOK
	})
	t.Logf("recovered %s after NATS restarted (write attempts by status: %v)", time.Since(start).Round(time.Millisecond), statuses)

	// Nothing from the failed writes was stored: one new event (the create
	// above), no new data key, the read model as before plus that server.
	if n := lcMsgCount(t, env.NATSURL(), env.Stream); n != eventsBefore+1 {
		t.Fatalf("stream holds %d events, want %d (before) + 1", n, eventsBefore)
	}
	if n := lcMsgCount(t, env.NATSURL(), keysStream); n != keysBefore {
		t.Fatalf("%d data keys, %d before the outage", n, keysBefore)
	}
	lcWaitCaughtUp(t, env, env.ReadModel)
	newID := created.JSON(t)["id"].(string)
	dumpAfter := lcDump(t, env.ReadModel)
	var kept []string
	for _, l := range strings.Split(dumpAfter, "\n") {
		if !strings.Contains(l, "id="+newID+"|") && !strings.HasPrefix(l, "id=1|last_seq=") {
			kept = append(kept, l)
		}
	}
	var was []string
	for _, l := range strings.Split(dumpBefore, "\n") {
		if !strings.HasPrefix(l, "id=1|last_seq=") {
			was = append(was, l)
		}
	}
	lcSameText(t, "read model apart from the write after recovery", strings.Join(was, "\n"), strings.Join(kept, "\n"))
	// The 503 under an Idempotency-Key was not remembered: the retry runs.
	again := env.Do(t, writes[1])
	if again.Status != http.StatusCreated {
		t.Fatalf("retry of the idempotent create after the outage: %d %s", again.Status, again.Body)
	}
}

// lcModuleRoot is the directory of go.mod.
func lcModuleRoot(tb testing.TB) string { return vaulttest.ModuleRoot(tb) }

// lcStream is a synthetic event stream written straight to JetStream.
type lcStream struct {
	servers, creds, revoked, deleted, serversDeleted int
	// live counts of what the read model must hold at the end.
	liveServers, liveCreds int
}

// lcPrefill publishes about n valid events (servers with credentials, some
// updated, revoked, deleted, and deleted servers) to the stream.
func lcPrefill(tb testing.TB, js jetstream.JetStream, n int) (lcStream, uint64) {
	tb.Helper()
	var st lcStream
	base := time.Now().Add(-time.Hour)
	var k int
	// Publishes are asynchronous in windows of at most window outstanding
	// acknowledgements: each full window is awaited and every acknowledgement
	// checked before the next one starts, so the client never stalls on its
	// pending limit ("too many outstanding async published messages") on a
	// slow machine, and a rejected publish fails the test instead of vanishing.
	const window = 256
	pending := make([]jetstream.PubAckFuture, 0, window)
	flush := func() {
		for _, f := range pending {
			select {
			case <-f.Ok():
			case err := <-f.Err():
				tb.Fatalf("prefill publish: %v", err)
			case <-time.After(60 * time.Second):
				tb.Fatal("prefill publish not acknowledged within 60s")
			}
		}
		pending = pending[:0]
	}
	publish := func(m events.Meta, e events.Event) {
		k++
		m.ID = ulid.Make().String()
		m.OccurredAt = events.NewTime(base.Add(time.Duration(k) * time.Millisecond))
		body, err := events.Marshal(m, e)
		if err != nil {
			tb.Fatal(err)
		}
		msg := nats.NewMsg(events.SubjectOf(events.Record{Meta: m, Event: e}))
		msg.Data = body
		msg.Header.Set(jetstream.MsgIDHeader, m.ID)
		f, err := js.PublishMsgAsync(msg)
		if err != nil {
			tb.Fatal(err)
		}
		if pending = append(pending, f); len(pending) == window {
			flush()
		}
	}
	sealed := &events.Sealed{Alg: "AES-256-GCM", Nonce: bytes.Repeat([]byte{7}, 12), Ciphertext: bytes.Repeat([]byte{9}, 48)}
	preview := "****...wxyz"
	for i := 0; k < n; i++ {
		sid := domain.ServerID(ulid.Make())
		owner := events.Owner{Account: "acct_a", User: fmt.Sprintf("user-%d", i%10)}
		sm := events.Meta{AggregateID: sid, ServerID: sid, Owner: owner}
		attrs := events.ServerAttrs{Name: fmt.Sprintf("server %d", i), ServerLabel: "label", ServerURL: "https://example.com/mcp",
			RequireApproval: "always", Metadata: map[string]string{"i": fmt.Sprint(i)}}
		publish(sm, events.ServerCreated{ServerAttrs: attrs})
		st.servers++
		var ids []string
		for j := range 4 {
			cid := domain.CredentialID(ulid.Make())
			cm := events.Meta{AggregateID: cid, ServerID: sid, Owner: owner}
			name := fmt.Sprintf("cred %d/%d", i, j)
			publish(cm, events.CredentialCreated{Name: &name, AuthType: "bearer", AuthorizationPreview: &preview,
				HeaderNames: []string{}, Secret: sealed})
			st.creds++
			switch (i*4 + j) % 50 {
			case 7:
				publish(cm, events.CredentialRevoked{})
				st.revoked++
			case 13:
				publish(cm, events.CredentialDeleted{})
				st.deleted++
				continue
			}
			ids = append(ids, cid)
		}
		attrs.Name += " (updated)"
		publish(sm, events.ServerUpdated{ChangedFields: []string{"name"}, ServerAttrs: attrs})
		if i%100 == 99 {
			publish(sm, events.ServerDeleted{CredentialIDs: ids})
			st.serversDeleted++
			continue
		}
		st.liveServers++
		st.liveCreds += len(ids)
	}
	flush()
	return st, uint64(k)
}

// lcRows counts the rows of table in the read model at path.
func lcRows(tb testing.TB, path, table string) int {
	tb.Helper()
	db := lcOpenReadOnly(tb, path)
	defer db.Close()
	var n int
	if err := db.QueryRow("SELECT count(*) FROM " + table).Scan(&n); err != nil {
		tb.Fatal(err)
	}
	return n
}

// A projector killed with SIGKILL in the middle of a large backlog, and
// started again, ends with exactly the read model of a full replay.
func TestProjectorKilledMidBatch(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the projector binary")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "projector")
	start := time.Now()
	build := exec.Command("go", "build", "-o", bin, "./cmd/projector")
	build.Dir = lcModuleRoot(t)
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	buildTook := time.Since(start)

	srv, err := natsserver.Start(natsserver.Options{Listen: "127.0.0.1:0", StoreDir: filepath.Join(dir, "js")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	url := srv.ClientURL()
	nc, err := eventstore.Connect(url, "prefill")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	st, err := eventstore.Open(context.Background(), nc, eventstore.Config{Stream: "VAULT"})
	if err != nil {
		t.Fatal(err)
	}
	start = time.Now()
	want, total := lcPrefill(t, st.JS, 30000)
	if last := lcLastSeq(t, url, "VAULT"); last != total {
		t.Fatalf("stream last seq %d, published %d", last, total)
	}
	t.Logf("built the projector in %s; published %d events (%d servers, %d credentials, %d revoked, %d deleted, %d servers deleted) in %s",
		buildTook.Round(time.Millisecond), total, want.servers, want.creds, want.revoked, want.deleted, want.serversDeleted, time.Since(start).Round(time.Millisecond))

	path := filepath.Join(dir, "killed.sqlite")
	var stderr vaulttest.SyncBuffer
	run := func() *exec.Cmd {
		cmd := exec.Command(bin)
		cmd.Env = append(os.Environ(), "VAULT_NATS_URL="+url, "VAULT_STREAM=VAULT", "VAULT_READMODEL_PATH="+path,
			"VAULT_DATA_DIR="+dir, "VAULT_LOG_LEVEL=info")
		cmd.Stdout, cmd.Stderr = &stderr, &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
		return cmd
	}

	// Kill it three times, each time a little after it committed a batch
	// beyond where the last kill left it: it is then fetching or applying
	// the next batch of 1,000. Each restart resumes from the last commit.
	var kills []uint64
	for round := range 3 {
		cmd := run()
		var prev uint64
		if len(kills) > 0 {
			prev = kills[len(kills)-1]
		}
		deadline := time.Now().Add(60 * time.Second)
		for lcAppliedSeq(t, path) <= prev {
			if time.Now().After(deadline) {
				t.Fatalf("the projector made no progress past %d:\n%s", prev, stderr.String())
			}
			time.Sleep(2 * time.Millisecond)
		}
		time.Sleep(time.Duration(round*7) * time.Millisecond)
		if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		err := cmd.Wait()
		if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
			t.Fatalf("projector did not die of SIGKILL: %v", err)
		}
		at := lcAppliedSeq(t, path)
		if at <= prev || at >= total {
			t.Fatalf("kill %d at applied seq %d of %d (previous %d): not in the middle", round+1, at, total, prev)
		}
		kills = append(kills, at)
	}

	// Restart; it resumes from its last committed batch.
	start = time.Now()
	cmd := run()
	vaulttest.Eventually(t, 120*time.Second, func() bool { return lcAppliedSeq(t, path) >= total })
	resumeTook := time.Since(start)
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("projector exit after SIGTERM: %v\n%s", err, stderr.String())
	}

	// A full replay of the same stream into a fresh file.
	fresh := filepath.Join(dir, "fresh.sqlite")
	start = time.Now()
	ctx, cancel := context.WithCancel(context.Background())
	p := &service.Projector{NATSURL: url, Stream: "VAULT", ReadModelPath: fresh, NoShred: true,
		Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	vaulttest.Eventually(t, 120*time.Second, func() bool { return lcAppliedSeq(t, fresh) >= total })
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	replayTook := time.Since(start)

	t.Logf("killed -9 at applied seq %v of %d; restarted and caught up in %s; full replay into a fresh file in %s",
		kills, total, resumeTook.Round(time.Millisecond), replayTook.Round(time.Millisecond))
	lcSameText(t, "read model after kill -9 and restart vs a full replay", lcDump(t, fresh), lcDump(t, path))
	if s, c := lcRows(t, path, "servers"), lcRows(t, path, "credentials"); s != want.liveServers || c != want.liveCreds {
		t.Fatalf("read model holds %d servers and %d credentials, want %d and %d", s, c, want.liveServers, want.liveCreds)
	}
	if r := lcRows(t, path, "credentials WHERE revoked_at IS NOT NULL"); r == 0 {
		t.Fatal("no revoked credential in the read model")
	}
	lcIntegrity(t, path)
}

// lcIntegrity fails unless SQLite's integrity check passes on path.
func lcIntegrity(tb testing.TB, path string) {
	tb.Helper()
	db := lcOpenReadOnly(tb, path)
	defer db.Close()
	var res sql.NullString
	if err := db.QueryRow("PRAGMA integrity_check").Scan(&res); err != nil || res.String != "ok" {
		tb.Fatalf("integrity_check: %q %v", res.String, err)
	}
}
