package projections_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/mcpvault/vault/audit"
	"github.com/mcpvault/vault/domain"
	"github.com/mcpvault/vault/events"
	"github.com/mcpvault/vault/projections"
)

// hdMsg stores an event as the stream would and decodes it with this build.
func hdMsg(tb testing.TB, seq uint64, r events.Record) projections.Msg {
	tb.Helper()
	r.ID, r.OccurredAt = fmt.Sprintf("evt-%02d", seq), apAt(seq)
	body, err := events.Marshal(r.Meta, r.Event)
	if err != nil {
		tb.Fatal(err)
	}
	return projections.Decode(seq, events.SubjectOf(r), body)
}

// hdFuture is mcp.credential.created at version 9, which this build does not
// know: the secret moved into "sealed" and auth_type became "kind".
func hdFuture(seq uint64, server, cred string) projections.Msg {
	body := fmt.Sprintf(`{"id":"evt-%02d","type":"mcp.credential.created","version":9,"aggregate_id":%q,"server_id":%q,`+
		`"owner":{"account":"acct_a","user":"apAlice"},"occurred_at":%q,"data":{"kind":"none","header_names":[]}}`,
		seq, cred, server, apAt(seq).String())
	return projections.Decode(seq, events.CredentialSubject(server, cred), []byte(body))
}

// hdUpgrade plays a newer build: it upcasts mcp.credential.created v9.
func hdUpgrade() (restore func()) {
	return events.RegisterDecoder(events.TypeCredentialCreated, func(version int, data []byte) (events.Event, error) {
		var e events.CredentialCreated
		switch version {
		case 1:
			err := json.Unmarshal(data, &e)
			return e, err
		case 9:
			var v9 struct {
				Kind        string   `json:"kind"`
				HeaderNames []string `json:"header_names"`
			}
			err := json.Unmarshal(data, &v9)
			return events.CredentialCreated{AuthType: v9.Kind, HeaderNames: v9.HeaderNames}, err
		}
		return nil, errors.New("unsupported version")
	})
}

// An event this build cannot decode holds its server tree: the tree's
// later events are kept, not applied; every other tree is applied; reads of
// the tree answer aggregate_held naming the event and its sequence; a build
// that knows the event releases the tree and applies what was kept in order.
func TestApplyHoldsTreeOfUnknownEventUntilABuildKnowsIt(t *testing.T) {
	ctx := context.Background()
	d := apOpen(t)
	sealed := &events.Sealed{Alg: "AES-256-GCM", Nonce: []byte("nonce-012345"), Ciphertext: []byte("ciphertext-bytes")}
	srv := func(id string, o events.Owner) events.Record {
		return events.Record{Meta: events.Meta{AggregateID: id, ServerID: id, Owner: o}, Event: events.ServerCreated{ServerAttrs: events.ServerAttrs{
			Name: id[len(id)-2:], ServerLabel: "l", ServerURL: "https://x.example.com", RequireApproval: "always", Metadata: map[string]string{}}}}
	}
	cred := func(server, id string, e events.Event) events.Record {
		return events.Record{Meta: events.Meta{AggregateID: id, ServerID: server, Owner: apAlice}, Event: e}
	}
	created := events.CredentialCreated{AuthType: "bearer", HeaderNames: []string{}, Secret: sealed}
	msgs := []projections.Msg{
		hdMsg(t, 1, srv(apSrvA, apAlice)),
		hdMsg(t, 2, cred(apSrvA, apC1, created)),
		hdMsg(t, 3, srv(apSrvB, apAlice)),
		hdFuture(4, apSrvA, apC2),                                   // held from here
		hdMsg(t, 5, cred(apSrvA, apC1, events.CredentialRevoked{})), // kept
		hdMsg(t, 6, cred(apSrvB, apC3, created)),                    // applied
		hdMsg(t, 7, cred(apSrvA, apC4, created)),                    // kept
	}
	if msgs[3].Err == nil {
		t.Fatal("this build decodes mcp.credential.created v9")
	}
	a, err := d.Apply(ctx, msgs[:5])
	if err != nil {
		t.Fatal(err)
	}
	if a.LastSeq != 5 || len(a.Held) != 1 || a.Held[0].ServerID != apSrvA || a.Held[0].Seq != 4 ||
		a.Held[0].EventType != "mcp.credential.created" || a.Held[0].Version != 9 || len(a.Shredded) != 0 {
		t.Fatalf("first batch: %+v", a)
	}
	if a, err = d.Apply(ctx, msgs[5:]); err != nil || a.LastSeq != 7 || len(a.Held) != 0 {
		t.Fatalf("second batch: %+v %v", a, err)
	}
	v := d.View()
	// Other trees are applied.
	if _, err := v.GetCredential(ctx, apAlice, apSrvB, apC3); err != nil {
		t.Fatalf("credential of another server: %v", err)
	}
	if err := v.Held(ctx, apAlice, apSrvB); err != nil {
		t.Fatalf("another server is held: %v", err)
	}
	// The held tree: as before the unknown event, and reads say why.
	c1, err := v.GetCredential(ctx, apAlice, apSrvA, apC1)
	if err != nil || c1.RevokedAt != nil {
		t.Fatalf("credential of the held server after its kept revoke: %+v %v", c1, err)
	}
	err = v.Held(ctx, apAlice, apSrvA)
	var de *domain.Error
	if !errors.As(err, &de) || de.Kind != domain.KindUnavailable || de.Code != "aggregate_held" ||
		!strings.Contains(de.Message, "mcp.credential.created") || !strings.Contains(de.Message, "version 9") ||
		!strings.Contains(de.Message, "sequence 4") {
		t.Fatalf("read of the held server: %v", err)
	}
	if err := v.Held(ctx, apBob, apSrvA); err != nil {
		t.Fatalf("another owner learns of the hold: %v", err)
	}
	holds, err := d.Holds(ctx)
	if err != nil || len(holds) != 1 || holds[0].Pending != 3 {
		t.Fatalf("holds: %+v %v", holds, err)
	}
	// A redelivery of kept events changes nothing.
	before := apDump(t, d)
	if _, err := d.Apply(ctx, msgs); err != nil || apDump(t, d) != before {
		t.Fatalf("redelivery: %v", err)
	}
	// The same build releases nothing.
	if r, err := d.Release(ctx); err != nil || len(r.Released) != 0 {
		t.Fatalf("release by the same build: %+v %v", r, err)
	}

	restore := hdUpgrade()
	defer restore()
	r, err := d.Release(ctx)
	if err != nil || !slices.Equal(r.Released, []string{apSrvA}) || !slices.Equal(r.Shredded, []string{apC1}) {
		t.Fatalf("release by a newer build: %+v %v", r, err)
	}
	if err := v.Held(ctx, apAlice, apSrvA); err != nil {
		t.Fatalf("still held after release: %v", err)
	}
	if c2, err := v.GetCredential(ctx, apAlice, apSrvA, apC2); err != nil || c2.AuthType != "none" || c2.CreatedAt != apAt(4) {
		t.Fatalf("the upcast credential: %+v %v", c2, err)
	}
	if c1, err := v.GetCredential(ctx, apAlice, apSrvA, apC1); err != nil || c1.RevokedAt == nil || *c1.RevokedAt != apAt(5) {
		t.Fatalf("the kept revoke: %+v %v", c1, err)
	}
	if _, err := v.GetCredential(ctx, apAlice, apSrvA, apC4); err != nil {
		t.Fatalf("the kept create: %v", err)
	}
	if _, tree, err := v.GetServer(ctx, apAlice, apSrvA); err != nil || tree != 7 {
		t.Fatalf("server tree sequence after release: %d %v", tree, err)
	}
	if s, err := d.Status(ctx); err != nil || len(s.Holds) != 0 || s.PendingShreds != 1 || s.LastSeq != 7 {
		t.Fatalf("status after release: %+v %v", s, err)
	}
	var kept int
	if err := d.SQL().QueryRow("SELECT count(*) FROM held_events").Scan(&kept); err != nil || kept != 0 {
		t.Fatalf("%d held events left: %v", kept, err)
	}

	// The same stream replayed by the newer build gives the same read model.
	ref := apOpen(t)
	replay := slices.Clone(msgs)
	replay[3] = hdFuture(4, apSrvA, apC2)
	if _, err := ref.Apply(ctx, replay); err != nil {
		t.Fatal(err)
	}
	if got, want := apDump(t, d), apDump(t, ref); got != want {
		t.Fatalf("released read model\n%s\ndiffers from a replay by the newer build\n%s", got, want)
	}
}

// Revokes, credential deletes and server deletes record the keys to destroy
// in the transaction of the projection; a server delete records every
// credential of the server in the read model, also those its event omits.
func TestApplyRecordsPendingShreds(t *testing.T) {
	ctx := context.Background()
	d := apOpen(t)
	recs := apStream()
	// Server B's delete names only apC3; apC4 was created concurrently.
	recs[11].Event = events.ServerDeleted{CredentialIDs: []string{apC3}}
	a := apApply(t, d, recs)
	if !slices.Equal(a.Shredded, apShredded) {
		t.Fatalf("shredded %v, want %v", a.Shredded, apShredded)
	}
	ps, err := d.PendingShreds(ctx, -1)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, p := range ps {
		ids = append(ids, p.CredentialID)
	}
	if want := []string{apC2, apC1, apC3, apC4}; !slices.Equal(ids, want) {
		t.Fatalf("pending shreds %v, want %v", ids, want)
	}
	if err := d.ShredsDone(ctx, []string{apC1}, map[string]string{apC2: "keys stream unavailable"}); err != nil {
		t.Fatal(err)
	}
	if s, err := d.Status(ctx); err != nil || s.PendingShreds != 3 {
		t.Fatalf("status: %+v %v", s, err)
	}
}

// hdForged is a revoke of cred that did not verify: the projector decoded it
// with the audit break as its error (service.DecodeVerified).
func hdForged(tb testing.TB, seq uint64, server, cred string) projections.Msg {
	tb.Helper()
	m := hdMsg(tb, seq, events.Record{Meta: events.Meta{AggregateID: cred, ServerID: server, Owner: apAlice}, Event: events.CredentialRevoked{}})
	m.Err = &audit.Break{Seq: seq, Subject: m.Subject, Err: audit.ErrUnsigned}
	return m
}

// hdReject is an operator's rejection of the event at seq.
func hdReject(tb testing.TB, seq uint64, of projections.Msg) projections.Msg {
	tb.Helper()
	return hdMsg(tb, seq, events.Record{Meta: events.Meta{Owner: events.Owner{Account: "operator"}},
		Event: events.AuditRejected{Sequence: of.Seq, Subject: of.Subject, Problem: "not signed", BodySHA256: audit.Hash(of.Data)}})
}

// A rejection releases the tree it held in the transaction that applies it
// (no reader sees the rejection applied and the tree still held), and an
// event kept behind the hold that does not verify either stays held until it
// is rejected too: releasing a tree never applies an unverified event.
func TestRejectionReleasesInItsOwnTransaction(t *testing.T) {
	ctx := context.Background()
	d := apOpen(t)
	sealed := &events.Sealed{Alg: "AES-256-GCM", Nonce: []byte("nonce-012345"), Ciphertext: []byte("ciphertext-bytes")}
	created := events.CredentialCreated{AuthType: "bearer", HeaderNames: []string{}, Secret: sealed}
	first, second := hdForged(t, 3, apSrvA, apC1), hdForged(t, 5, apSrvA, apC1)
	msgs := []projections.Msg{
		hdMsg(t, 1, events.Record{Meta: events.Meta{AggregateID: apSrvA, ServerID: apSrvA, Owner: apAlice}, Event: events.ServerCreated{
			ServerAttrs: events.ServerAttrs{Name: "A", ServerLabel: "a", ServerURL: "https://a.example.com", RequireApproval: "always", Metadata: map[string]string{}}}}),
		hdMsg(t, 2, events.Record{Meta: events.Meta{AggregateID: apC1, ServerID: apSrvA, Owner: apAlice}, Event: created}),
		first, // held from here
		hdMsg(t, 4, events.Record{Meta: events.Meta{AggregateID: apC2, ServerID: apSrvA, Owner: apAlice}, Event: created}), // kept
		second, // kept, and does not verify either
		hdReject(t, 6, first),
	}
	if msgs[5].Err != nil {
		t.Fatalf("the rejection does not decode: %v", msgs[5].Err)
	}
	v := d.View()
	a, err := d.Apply(ctx, msgs)
	if err != nil || a.LastSeq != 6 || len(a.Released) != 0 {
		t.Fatalf("apply: %+v %v", a, err)
	}
	// Released up to the second forgery, in the same transaction.
	if _, err := v.GetCredential(ctx, apAlice, apSrvA, apC2); err != nil {
		t.Fatalf("the create kept behind the rejected event: %v", err)
	}
	holds, err := d.Holds(ctx)
	if err != nil || len(holds) != 1 || holds[0].Seq != 5 || holds[0].Pending != 1 {
		t.Fatalf("holds after the first rejection: %+v %v", holds, err)
	}
	if err := v.Held(ctx, apAlice, apSrvA); err == nil || !strings.Contains(err.Error(), "does not verify") {
		t.Fatalf("read of the tree held at the second forgery: %v", err)
	}
	if c1, err := v.GetCredential(ctx, apAlice, apSrvA, apC1); err != nil || c1.RevokedAt != nil {
		t.Fatalf("a forged revoke was applied: %+v %v", c1, err)
	}
	// Rejecting the second one releases the tree, still without either forgery.
	if a, err = d.Apply(ctx, []projections.Msg{hdReject(t, 7, second)}); err != nil || !slices.Equal(a.Released, []string{apSrvA}) {
		t.Fatalf("second rejection: %+v %v", a, err)
	}
	if err := v.Held(ctx, apAlice, apSrvA); err != nil {
		t.Fatalf("held after both rejections: %v", err)
	}
	if c1, err := v.GetCredential(ctx, apAlice, apSrvA, apC1); err != nil || c1.RevokedAt != nil {
		t.Fatalf("a forged revoke was applied: %+v %v", c1, err)
	}
	if s, err := d.Status(ctx); err != nil || len(s.Holds) != 0 || s.PendingShreds != 0 || s.LastSeq != 7 {
		t.Fatalf("status: %+v %v", s, err)
	}
}

// A stream written before events were signed (VAULT_AUDIT_UNSIGNED_UNTIL):
// a tree held at an event this build cannot decode, with unsigned events
// kept behind it, is released by a newer build that verifies, the unsigned
// events up to the limit applied as the projector applies them; an unsigned
// kept event past the limit stays held.
func TestReleaseAcceptsLegacyUnsignedEvents(t *testing.T) {
	ctx := context.Background()
	keys, err := audit.ParseKeyring(audit.NewKeySpec("k1"))
	if err != nil {
		t.Fatal(err)
	}
	sealed := &events.Sealed{Alg: "AES-256-GCM", Nonce: []byte("nonce-012345"), Ciphertext: []byte("ciphertext-bytes")}
	created := events.CredentialCreated{AuthType: "bearer", HeaderNames: []string{}, Secret: sealed}
	msgs := []projections.Msg{
		hdMsg(t, 1, events.Record{Meta: events.Meta{AggregateID: apSrvA, ServerID: apSrvA, Owner: apAlice}, Event: events.ServerCreated{
			ServerAttrs: events.ServerAttrs{Name: "A", ServerLabel: "a", ServerURL: "https://a.example.com", RequireApproval: "always", Metadata: map[string]string{}}}}),
		hdMsg(t, 2, events.Record{Meta: events.Meta{AggregateID: apC1, ServerID: apSrvA, Owner: apAlice}, Event: created}),
		hdFuture(3, apSrvA, apC2), // held from here
		hdMsg(t, 4, events.Record{Meta: events.Meta{AggregateID: apC1, ServerID: apSrvA, Owner: apAlice}, Event: events.CredentialRevoked{}}),
		hdMsg(t, 5, events.Record{Meta: events.Meta{AggregateID: apC4, ServerID: apSrvA, Owner: apAlice}, Event: created}),
	}
	for _, until := range []uint64{5, 4} {
		d := apOpen(t)
		if _, err := d.Apply(ctx, msgs); err != nil {
			t.Fatal(err)
		}
		d.VerifyWith(keys, until)
		restore := hdUpgrade()
		r, err := d.Release(ctx)
		restore()
		if err != nil {
			t.Fatal(err)
		}
		v := d.View()
		if c1, err := v.GetCredential(ctx, apAlice, apSrvA, apC1); err != nil || c1.RevokedAt == nil {
			t.Fatalf("until %d: the kept unsigned revoke at 4 was not applied: %+v %v", until, c1, err)
		}
		holds, err := d.Holds(ctx)
		switch until {
		case 5:
			if err != nil || !slices.Equal(r.Released, []string{apSrvA}) || len(holds) != 0 {
				t.Fatalf("until 5: released %v, holds %+v %v", r.Released, holds, err)
			}
		case 4:
			if err != nil || len(r.Released) != 0 || len(holds) != 1 || holds[0].Seq != 5 || !strings.Contains(holds[0].Reason, "not signed") {
				t.Fatalf("until 4: released %v, holds %+v %v", r.Released, holds, err)
			}
		}
	}
}
