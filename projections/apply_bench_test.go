package projections_test

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"

	"github.com/mcpvault/vault/audit"
	"github.com/mcpvault/vault/events"
	"github.com/mcpvault/vault/projections"
)

// BenchmarkApplyCreates is the apply goroutine's share of a catch-up: Apply
// of batches of 5,000 signed credential creations (each the first of its
// chain), decoded beforehand as the decoding goroutines do, with the chain
// heads checked and written as a deployed projector does. ns/op is per
// event.
func BenchmarkApplyCreates(b *testing.B) {
	const batch = 5000
	ctx := context.Background()
	keys, err := audit.ParseKeyring(audit.NewKeySpec("k1"))
	if err != nil {
		b.Fatal(err)
	}
	d, err := projections.Open(ctx, filepath.Join(b.TempDir(), "rm.sqlite"), projections.Writer)
	if err != nil {
		b.Fatal(err)
	}
	defer d.Close()
	d.VerifyWith(keys, 0)
	srv := "mcp_srv_0123456789abcdef0123456789abcdef"
	owner := events.Owner{Account: "acct_bench", User: "user_bench"}
	var seq uint64
	next := func(r events.Record) projections.Msg {
		seq++
		r.Sequence, r.ID, r.OccurredAt = seq, fmt.Sprintf("evt_%032x", seq), apAt(seq)
		body, err := events.Marshal(r.Meta, r.Event)
		if err != nil {
			b.Fatal(err)
		}
		subject := events.SubjectOf(r)
		h := map[string][]string{}
		for k, v := range keys.Sign(subject, body, audit.FirstLink) {
			h[k] = []string{v}
		}
		m := projections.Decode(seq, subject, body)
		m.Header = h
		return m
	}
	server := next(events.Record{Meta: events.Meta{AggregateID: srv, ServerID: srv, Owner: owner},
		Event: events.ServerCreated{ServerAttrs: events.ServerAttrs{Name: "Bench", ServerLabel: "bench",
			ServerURL: "https://mcp.example.com/mcp", RequireApproval: "never", Metadata: map[string]string{}}}})
	if _, err := d.Apply(ctx, []projections.Msg{server}); err != nil {
		b.Fatal(err)
	}
	sealed := &events.Sealed{Alg: "AES-256-GCM", DEKWrappedBy: "kek_0123456789abcdef",
		Nonce: make([]byte, 12), Ciphertext: make([]byte, 64)}
	created := events.CredentialCreated{Name: apPtr("bench"), AuthType: "bearer", AuthorizationPreview: apPtr("****...wxyz"),
		HeaderNames: []string{}, Secret: sealed}
	b.ResetTimer()
	for i := 0; i < b.N; i += batch {
		b.StopTimer()
		msgs := make([]projections.Msg, min(batch, b.N-i))
		for j := range msgs {
			cred := fmt.Sprintf("mcp_cred_%032x", seq+1)
			msgs[j] = next(events.Record{Meta: events.Meta{AggregateID: cred, ServerID: srv, Owner: owner}, Event: created})
		}
		b.StartTimer()
		a, err := d.Apply(ctx, msgs)
		if err != nil {
			b.Fatal(err)
		}
		if a.LastSeq != seq {
			b.Fatalf("applied to %d, want %d", a.LastSeq, seq)
		}
	}
	b.StopTimer()
	// Every chain link checked out: nothing was held instead of applied.
	if s, err := d.Status(ctx); err != nil || len(s.Holds) != 0 {
		b.Fatalf("status: %+v %v", s, err)
	}
}
