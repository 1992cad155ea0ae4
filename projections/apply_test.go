package projections_test

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mcpvault/vault/events"
	"github.com/mcpvault/vault/projections"
)

const (
	apSrvA = "mcp_srv_0196a1b2c3d4e5f60718293a4b5c6d01"
	apSrvB = "mcp_srv_0196a1b2c3d4e5f60718293a4b5c6d02"
	apSrvC = "mcp_srv_0196a1b2c3d4e5f60718293a4b5c6d03"
	apSrvD = "mcp_srv_0196a1b2c3d4e5f60718293a4b5c6d04"
	apC1   = "mcp_cred_0196a1b2c3d4e5f60718293a4b5c6d11"
	apC2   = "mcp_cred_0196a1b2c3d4e5f60718293a4b5c6d12"
	apC3   = "mcp_cred_0196a1b2c3d4e5f60718293a4b5c6d13"
	apC4   = "mcp_cred_0196a1b2c3d4e5f60718293a4b5c6d14"
	apC5   = "mcp_cred_0196a1b2c3d4e5f60718293a4b5c6d15"
)

var (
	apAlice = events.Owner{Account: "acct_a", User: "apAlice"}
	apBob   = events.Owner{Account: "acct_b"}
	apEpoch = time.Date(2026, 4, 29, 12, 0, 0, 0, time.UTC)
)

func apAt(seq uint64) events.Time {
	return events.NewTime(apEpoch.Add(time.Duration(seq) * time.Second))
}

func apPtr[T any](v T) *T { return &v }

// stream is a small event stream with every event type, in sequence 1..16.
func apStream() []events.Record {
	type ev struct {
		agg, srv string
		owner    events.Owner
		e        events.Event
	}
	sealed := &events.Sealed{Alg: "AES-256-GCM", Nonce: []byte("nonce-012345"), Ciphertext: []byte("ciphertext-bytes")}
	attrs := events.ServerAttrs{Name: "Linear", ServerLabel: "linear", ServerURL: "https://mcp.linear.app/mcp",
		ServerDescription: apPtr("issues"), AllowedTools: []string{"a", "b"}, RequireApproval: "always",
		Metadata: map[string]string{"team": "core"}}
	updated := attrs
	updated.Name, updated.ServerDescription, updated.AllowedTools = "Linear (renamed)", nil, nil
	list := []ev{
		{apSrvA, apSrvA, apAlice, events.ServerCreated{ServerAttrs: attrs}},
		{apC1, apSrvA, apAlice, events.CredentialCreated{Name: apPtr("bearer"), AuthType: "bearer", AuthorizationPreview: apPtr("****...wxyz"),
			HeaderNames: []string{}, ExpiresAt: apPtr(apAt(100000)), Secret: sealed}},
		{apC2, apSrvA, apAlice, events.CredentialCreated{AuthType: "headers", HeaderNames: []string{"X-Api-Key", "X-Tenant"}, Secret: sealed}},
		{apSrvA, apSrvA, apAlice, events.ServerUpdated{ChangedFields: []string{"name", "server_description", "allowed_tools"}, ServerAttrs: updated}},
		{apC1, apSrvA, apAlice, events.CredentialUsed{Operation: "test", Outcome: "connected", ToolCount: 2, TargetHost: "mcp.linear.app"}},
		{apC2, apSrvA, apAlice, events.CredentialRevoked{}},
		{apSrvB, apSrvB, apBob, events.ServerCreated{ServerAttrs: events.ServerAttrs{Name: "B", ServerLabel: "b", ServerURL: "https://b.example.com",
			RequireApproval: "never", Metadata: map[string]string{}}}},
		{apC3, apSrvB, apBob, events.CredentialCreated{AuthType: "none", HeaderNames: []string{}}},
		{"", apSrvD, events.Owner{}, nil}, // a future event: holds server D
		{apC1, apSrvA, apAlice, events.CredentialDeleted{}},
		{apC4, apSrvB, apBob, events.CredentialCreated{AuthType: "authorization", AuthorizationPreview: apPtr("****"), HeaderNames: []string{}, Secret: sealed}},
		{apSrvB, apSrvB, apBob, events.ServerDeleted{CredentialIDs: []string{apC3, apC4}}},
		{apSrvC, apSrvC, apAlice, events.ServerCreated{ServerAttrs: events.ServerAttrs{Name: "C", ServerLabel: "c", ServerURL: "https://c.example.com",
			RequireApproval: "always", Metadata: map[string]string{}}}},
		{apC5, apSrvC, apAlice, events.CredentialCreated{Name: apPtr("apC5"), AuthType: "bearer", AuthorizationPreview: apPtr("****...1234"), HeaderNames: []string{}, Secret: sealed}},
		{apC5, apSrvC, apAlice, events.CredentialUsed{Operation: "test", Outcome: "failed", ErrorCode: "upstream_unauthorized", TargetHost: "c.example.com"}},
		{apSrvC, apSrvC, apAlice, events.ServerUpdated{ChangedFields: []string{"metadata"}, ServerAttrs: events.ServerAttrs{Name: "C", ServerLabel: "c",
			ServerURL: "https://c.example.com", RequireApproval: "always", Metadata: map[string]string{"k": "v"}}}},
	}
	recs := make([]events.Record, len(list))
	for i, e := range list {
		seq := uint64(i + 1)
		recs[i] = events.Record{Meta: events.Meta{ID: fmt.Sprintf("evt-%02d", seq), AggregateID: e.agg, ServerID: e.srv,
			Owner: e.owner, OccurredAt: apAt(seq)}, Event: e.e, Sequence: seq}
	}
	return recs
}

// apShredded is what applying the whole stream must ask to destroy.
var apShredded = []string{apC2, apC1, apC3, apC4}

func apOpen(tb testing.TB) *projections.DB {
	tb.Helper()
	d, err := projections.Open(context.Background(), filepath.Join(tb.TempDir(), "rm.sqlite"), projections.Writer)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { d.Close() })
	return d
}

// apMsgs stores recs as the stream would (a record without event becomes a
// future event, mcp.server.renamed v1, of its server) and decodes them.
func apMsgs(tb testing.TB, recs []events.Record) []projections.Msg {
	tb.Helper()
	out := make([]projections.Msg, len(recs))
	for i, r := range recs {
		var body []byte
		var err error
		subject := events.SubjectOf(r)
		if r.Event == nil {
			subject = events.ServerSubject(r.ServerID)
			body = []byte(`{"id":"evt-future","type":"mcp.server.renamed","version":1,"aggregate_id":"` + r.ServerID +
				`","server_id":"` + r.ServerID + `","owner":{"account":"acct_a"},"occurred_at":"2026-04-29T12:00:00.000Z","data":{"name":"x"}}`)
		} else if body, err = events.Marshal(r.Meta, r.Event); err != nil {
			tb.Fatal(err)
		}
		out[i] = projections.Decode(r.Sequence, subject, body)
	}
	return out
}

func apApply(tb testing.TB, d *projections.DB, recs []events.Record) projections.Applied {
	tb.Helper()
	a, err := d.Apply(context.Background(), apMsgs(tb, recs))
	if err != nil {
		tb.Fatal(err)
	}
	return a
}

// dump is every row of the read model, ordered, every column.
func apDump(tb testing.TB, d *projections.DB) string {
	tb.Helper()
	var b strings.Builder
	for _, q := range []string{"SELECT * FROM servers ORDER BY id", "SELECT * FROM credentials ORDER BY id", "SELECT * FROM projector_state"} {
		rows, err := d.SQL().Query(q)
		if err != nil {
			tb.Fatal(err)
		}
		cols, _ := rows.Columns()
		for rows.Next() {
			vals := make([]any, len(cols))
			ptrs := make([]any, len(cols))
			for i := range vals {
				ptrs[i] = &vals[i]
			}
			if err := rows.Scan(ptrs...); err != nil {
				tb.Fatal(err)
			}
			for i, v := range vals {
				if raw, ok := v.([]byte); ok {
					v = hex.EncodeToString(raw)
				}
				fmt.Fprintf(&b, "%s=%v|", cols[i], v)
			}
			b.WriteByte('\n')
		}
		rows.Close()
	}
	return b.String()
}

// The state the whole stream must give, checked through the read queries.
func apCheckFinal(tb testing.TB, d *projections.DB) {
	tb.Helper()
	ctx := context.Background()
	v := d.View()
	a, treeA, err := v.GetServer(ctx, apAlice, apSrvA)
	if err != nil || a.Name != "Linear (renamed)" || a.ServerDescription != nil || a.AllowedTools != nil || a.UpdatedAt != apAt(4) || treeA != 10 {
		tb.Fatalf("server A: %+v tree %d %v", a, treeA, err)
	}
	if _, err := v.GetCredential(ctx, apAlice, apSrvA, apC1); !errors.Is(err, projections.ErrNotFound) {
		tb.Fatalf("deleted credential apC1: %v", err)
	}
	r2, err := v.GetCredential(ctx, apAlice, apSrvA, apC2)
	if err != nil || r2.RevokedAt == nil || *r2.RevokedAt != apAt(6) || !slices.Equal(r2.HeaderNames, []string{"X-Api-Key", "X-Tenant"}) {
		tb.Fatalf("revoked credential apC2: %+v %v", r2, err)
	}
	if _, _, err := v.GetServer(ctx, apBob, apSrvB); !errors.Is(err, projections.ErrNotFound) {
		tb.Fatalf("deleted server B: %v", err)
	}
	for _, id := range []string{apC3, apC4} {
		if _, err := v.GetCredential(ctx, apBob, apSrvB, id); !errors.Is(err, projections.ErrNotFound) {
			tb.Fatalf("credential %s of the deleted server: %v", id, err)
		}
	}
	c, treeC, err := v.GetServer(ctx, apAlice, apSrvC)
	if err != nil || c.Metadata["k"] != "v" || treeC != 16 {
		tb.Fatalf("server C: %+v tree %d %v", c, treeC, err)
	}
	r5, err := v.GetCredential(ctx, apAlice, apSrvC, apC5)
	if err != nil || r5.LastUsedAt == nil || *r5.LastUsedAt != apAt(15) || r5.RevokedAt != nil {
		tb.Fatalf("used credential apC5: %+v %v", r5, err)
	}
	if seq, err := d.AppliedSeq(ctx); err != nil || seq != 16 {
		tb.Fatalf("last_seq %d %v", seq, err)
	}
}

// A redelivered event (any record at or below the last applied sequence,
// alone or mixed into a batch) changes nothing and asks for no shredding.
func TestApplyRedeliveryChangesNothing(t *testing.T) {
	recs := apStream()
	d := apOpen(t)
	a := apApply(t, d, recs)
	if a.LastSeq != 16 || !slices.Equal(a.Shredded, apShredded) {
		t.Fatalf("first apply: %+v", a)
	}
	apCheckFinal(t, d)
	want := apDump(t, d)
	for name, batch := range map[string][]events.Record{
		"everything again":  recs,
		"a prefix":          recs[:5],
		"a suffix":          recs[10:],
		"the last event":    recs[15:],
		"one in the middle": recs[5:6],
		"out of order":      {recs[11], recs[3], recs[5]},
	} {
		got := apApply(t, d, batch)
		if got.LastSeq != 16 || len(got.Shredded) != 0 {
			t.Errorf("%s: %+v", name, got)
		}
		if d := apDump(t, d); d != want {
			t.Fatalf("%s changed the read model:\n%s\nwant\n%s", name, d, want)
		}
	}
}

// Replaying the stream into a fresh read model, in any batching and with
// redelivered overlaps between batches, gives exactly the same content.
func TestApplyReplayIsDeterministic(t *testing.T) {
	recs := apStream()
	ref := apOpen(t)
	apApply(t, ref, recs)
	want := apDump(t, ref)
	for _, size := range []int{1, 2, 3, 5, 7, 16} {
		for _, overlap := range []int{0, 2} {
			d := apOpen(t)
			var shredded []string
			for from := 0; from < len(recs); from += size {
				lo := max(from-overlap, 0)
				shredded = append(shredded, apApply(t, d, recs[lo:min(from+size, len(recs))]).Shredded...)
			}
			if got := apDump(t, d); got != want {
				t.Fatalf("batches of %d (overlap %d) gave\n%s\nwant\n%s", size, overlap, got, want)
			}
			if !slices.Equal(shredded, apShredded) {
				t.Fatalf("batches of %d (overlap %d) shredded %v, want %v", size, overlap, shredded, apShredded)
			}
			apCheckFinal(t, d)
		}
	}
}

// A record beyond the next expected sequence is a gap: alone it is refused
// with ErrGap and nothing changes; after a contiguous run, the run is
// committed and the caller resumes from the new last sequence.
func TestApplyGap(t *testing.T) {
	recs := apStream()
	d := apOpen(t)
	apApply(t, d, recs[:3])
	before := apDump(t, d)
	if _, err := d.Apply(context.Background(), apMsgs(t, recs[4:6])); !errors.Is(err, projections.ErrGap) {
		t.Fatalf("seq 5 after 3: %v, want ErrGap", err)
	}
	if apDump(t, d) != before {
		t.Fatal("a refused gap changed the read model")
	}
	a := apApply(t, d, []events.Record{recs[3], recs[4], recs[6], recs[7]}) // 4, 5, then 7: gap
	if a.LastSeq != 5 {
		t.Fatalf("contiguous run 4..5 then a gap: last seq %d, want 5", a.LastSeq)
	}
	if seq, _ := d.AppliedSeq(context.Background()); seq != 5 {
		t.Fatalf("stored last seq %d, want 5", seq)
	}
	apApply(t, d, recs[5:]) // resume from 6
	apCheckFinal(t, d)
}

// A batch is one transaction: when any record in it fails, nothing of the
// batch is stored, not even its earlier records or the last sequence; the
// same batch applied again once the fault is gone applies completely.
func TestApplyBatchIsAtomic(t *testing.T) {
	recs := apStream()
	d := apOpen(t)
	apApply(t, d, recs[:3])
	before := apDump(t, d)
	// A fault on the third record of the next batch (apC3's insert).
	if _, err := d.SQL().Exec(`CREATE TRIGGER fault BEFORE INSERT ON credentials WHEN NEW.id = '` + apC3 + `'
		BEGIN SELECT RAISE(ABORT, 'injected fault'); END`); err != nil {
		t.Fatal(err)
	}
	_, err := d.Apply(context.Background(), apMsgs(t, recs[3:12]))
	if err == nil || !strings.Contains(err.Error(), "injected fault") {
		t.Fatalf("apply with a failing record: %v", err)
	}
	if got := apDump(t, d); got != before {
		t.Fatalf("a failed batch left changes behind:\n%s\nwant\n%s", got, before)
	}
	if _, err := d.SQL().Exec("DROP TRIGGER fault"); err != nil {
		t.Fatal(err)
	}
	if a := apApply(t, d, recs[3:]); a.LastSeq != 16 {
		t.Fatalf("after the fault: %+v", a)
	}
	apCheckFinal(t, d)
	ref := apOpen(t)
	apApply(t, ref, recs)
	if apDump(t, d) != apDump(t, ref) {
		t.Fatal("a retried batch differs from an uninterrupted replay")
	}
}
