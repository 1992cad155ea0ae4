package natsserver_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/mcpvault/vault/internal/vaulttest"
)

// TestAuditPushConsumerCannotWriteIntoOtherStreams: the audit user may create
// consumers on the event stream, and nats-server does not check a push
// consumer's deliver subject against the creator's publish permissions. A
// consumer delivering events onto the keys stream's or the bucket's subjects
// must still not change them.
func TestAuditPushConsumerCannotWriteIntoOtherStreams(t *testing.T) {
	env, cred := seeded(t)
	_, js, _ := connectAs(t, env, "audit")
	admin := vaulttest.MustJetStream(t, env.NATSURL())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	state := func(name string) jetstream.StreamState {
		s, err := admin.Stream(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		return s.CachedInfo().State
	}
	keysBefore, kvBefore := state(env.Stream+"_KEYS"), state("KV_"+env.Stream+"_IDEMPOTENCY")
	targets := []string{
		"vaultkeys." + strings.ToLower(env.Stream) + ".dek." + cred,
		"$KV." + env.Stream + "_IDEMPOTENCY.forged",
	}
	for i, subj := range targets {
		_, err := js.CreateOrUpdateConsumer(ctx, env.Stream, jetstream.ConsumerConfig{Name: "push" + string(rune('a'+i)), DeliverSubject: subj})
		t.Logf("push consumer onto %s: %v", subj, err)
	}
	time.Sleep(time.Second)
	if after := state(env.Stream + "_KEYS"); after.LastSeq != keysBefore.LastSeq || after.Msgs != keysBefore.Msgs {
		t.Fatalf("keys stream changed: %+v -> %+v", keysBefore, after)
	}
	if after := state("KV_" + env.Stream + "_IDEMPOTENCY"); after.LastSeq != kvBefore.LastSeq {
		t.Fatalf("idempotency bucket changed: %+v -> %+v", kvBefore, after)
	}
}
