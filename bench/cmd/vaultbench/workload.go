package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/oklog/ulid/v2"

	"github.com/mcpvault/vault/audit"
	"github.com/mcpvault/vault/domain"
	"github.com/mcpvault/vault/events"
	"github.com/mcpvault/vault/eventstore"
)

// streamMsg is one event ready to publish: subject, body and message ID.
// benchAuditSpec is the audit keyring of the vaults the bench starts; the
// events it prefills through the stream are signed with it, as the API
// signs its own, so the projector and the command side verify them.
var (
	benchAuditSpec = audit.NewKeySpec("bench-audit1")
	benchAudit     = func() *audit.Keyring {
		kr, err := audit.ParseKeyring(benchAuditSpec)
		if err != nil {
			panic(err)
		}
		return kr
	}()
)

type streamMsg struct {
	Subject string
	Data    []byte
	MsgID   string
}

// fixture is one owner's server and its credentials, as prefilled.
type fixture struct {
	Owner    events.Owner
	ServerID string
	Creds    []string
}

func newServerID() string     { return domain.ServerID(ulid.Make()) }
func newCredentialID() string { return domain.CredentialID(ulid.Make()) }

// sealedFixture stands in for a sealed bearer token of 40 characters: the
// same sizes as the API's AES-256-GCM output (nonce 12, plaintext
// {"bearer_token":"…"} plus a 16-byte tag); the bytes are never opened.
var sealedFixture = func() *events.Sealed {
	nonce, ct := make([]byte, 12), make([]byte, len(`{"bearer_token":""}`)+40+16)
	rand.Read(nonce)
	rand.Read(ct)
	return &events.Sealed{Alg: "AES-256-GCM", Nonce: nonce, Ciphertext: ct}
}()

func serverCreated(owner events.Owner, id string, now events.Time) streamMsg {
	meta := events.Meta{ID: ulid.Make().String(), AggregateID: id, ServerID: id, Owner: owner, OccurredAt: now}
	body, err := events.Marshal(meta, events.ServerCreated{ServerAttrs: events.ServerAttrs{
		Name: "bench server", ServerLabel: "bench", ServerURL: "https://mcp.example.com/mcp",
		RequireApproval: domain.RequireAlways, Metadata: map[string]string{}}})
	if err != nil {
		panic(err)
	}
	return streamMsg{Subject: events.ServerSubject(id), Data: body, MsgID: meta.ID}
}

func credentialCreated(owner events.Owner, serverID, id string, now events.Time) streamMsg {
	meta := events.Meta{ID: ulid.Make().String(), AggregateID: id, ServerID: serverID, Owner: owner, OccurredAt: now}
	name, preview := "bench credential", "****...abcd"
	body, err := events.Marshal(meta, events.CredentialCreated{Name: &name, AuthType: domain.AuthBearer,
		AuthorizationPreview: &preview, HeaderNames: []string{}, Secret: sealedFixture})
	if err != nil {
		panic(err)
	}
	return streamMsg{Subject: events.CredentialSubject(serverID, id), Data: body, MsgID: meta.ID}
}

// buildFixtures makes users owners (account bench, users prefix0000…) with
// one server each and perUser credentials, and returns them with the events
// in stream order: each server's creation before its credentials, the
// credentials interleaved across servers as live traffic would be.
func buildFixtures(prefix string, users, perUser int) ([]fixture, []streamMsg) {
	now := events.NewTime(time.Now())
	fx := make([]fixture, users)
	msgs := make([]streamMsg, 0, users*(perUser+1))
	for u := range fx {
		fx[u] = fixture{Owner: events.Owner{Account: benchAccount, User: fmt.Sprintf("%s%04d", prefix, u)}, ServerID: newServerID()}
		msgs = append(msgs, serverCreated(fx[u].Owner, fx[u].ServerID, now))
	}
	for i := 0; i < perUser; i++ {
		for u := range fx {
			id := newCredentialID()
			fx[u].Creds = append(fx[u].Creds, id)
			msgs = append(msgs, credentialCreated(fx[u].Owner, fx[u].ServerID, id, now))
		}
	}
	return fx, msgs
}

// publishAll appends msgs to the event stream with asynchronous publishes
// (with message IDs, as the API does) and returns the stream's last sequence.
func publishAll(ctx context.Context, st *eventstore.Store, msgs []streamMsg) (uint64, error) {
	js, err := jetstream.New(st.NC, jetstream.WithPublishAsyncMaxPending(4096))
	if err != nil {
		return 0, err
	}
	var (
		failed   int
		firstErr error
	)
	const window = 1024 // in flight at most, well under the client's limit
	futures := make([]jetstream.PubAckFuture, 0, window)
	wait := func(n int) {
		for _, f := range futures[:n] {
			select {
			case <-f.Ok():
			case err := <-f.Err():
				if failed++; failed == 1 {
					firstErr = err
				}
			case <-ctx.Done():
				return
			}
		}
		futures = append(futures[:0], futures[n:]...)
	}
	for _, m := range msgs {
		if len(futures) == window {
			wait(window / 2)
		}
		if ctx.Err() != nil {
			return 0, ctx.Err()
		}
		msg := nats.NewMsg(m.Subject)
		msg.Data = m.Data
		// Every prefilled event is the first of its aggregate (a create).
		for k, v := range benchAudit.Sign(m.Subject, m.Data, audit.FirstLink) {
			msg.Header.Set(k, v)
		}
		f, err := js.PublishMsgAsync(msg, jetstream.WithMsgID(m.MsgID))
		if err != nil {
			return 0, err
		}
		futures = append(futures, f)
	}
	wait(len(futures))
	if failed > 0 {
		return 0, fmt.Errorf("%d of %d publishes failed, first: %v", failed, len(msgs), firstErr)
	}
	if ctx.Err() != nil {
		return 0, ctx.Err()
	}
	return st.LastSeq(ctx)
}

// createBody is the createCredential request the bench sends: a bearer
// token of 40 random characters, as in the seed example.
func createBody() []byte {
	b := make([]byte, 20)
	rand.Read(b)
	body, _ := json.Marshal(map[string]string{"name": "bench", "bearer_token": "sk-" + hex.EncodeToString(b)[:37]})
	return body
}

var serverBody = []byte(`{"name":"bench server","server_label":"bench","server_url":"https://mcp.example.com/mcp"}`)
