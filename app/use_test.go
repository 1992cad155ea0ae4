package app

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/mcpvault/vault/domain"
	"github.com/mcpvault/vault/events"
)

// With no stream to append to, records stay queued (retried): the queue's
// bound then refuses new uses, and Drain gives up at its deadline instead
// of hanging the shutdown.
func TestUseQueueIsBoundedAndDrains(t *testing.T) {
	v := &Vault{Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	v.proxy.uses.once.Do(func() { v.startUses(useQueueOptions{Size: 2, Workers: 1, Backoff: 5 * time.Millisecond}) })
	c := domain.Credential{ID: "mcp_cred_00000000000000000000000000000001", ServerID: "mcp_srv_00000000000000000000000000000001"}
	for range 2 {
		slot, err := v.ReserveUse(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		slot.Record(c, events.CredentialUsed{Operation: "tools/call", Outcome: "ok"}, time.Now())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := v.ReserveUse(ctx); !errors.Is(err, ErrUseBacklog) {
		t.Fatalf("a third use with room for two: %v", err)
	}
	dctx, dcancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer dcancel()
	start := time.Now()
	v.DrainUses(dctx)
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("drain took %s past its deadline", d)
	}
	if _, err := v.ReserveUse(context.Background()); !errors.Is(err, ErrUseBacklog) {
		t.Fatalf("a use after the drain: %v", err)
	}
}

// A place given back frees room at once.
func TestUseSlotRelease(t *testing.T) {
	v := &Vault{Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	v.proxy.uses.once.Do(func() { v.startUses(useQueueOptions{Size: 1, Workers: 1}) })
	s, err := v.ReserveUse(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	s.Release()
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := v.ReserveUse(ctx); err != nil {
		t.Fatalf("after a release: %v", err)
	}
}
