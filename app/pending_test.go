package app

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/mcpvault/vault/events"
	"github.com/mcpvault/vault/projections"
)

func TestTreeOf(t *testing.T) {
	const srv = "mcp_srv_0196a1b2c3d4e5f60718293a4b5c6d7e"
	for subject, want := range map[string]string{
		events.ServerSubject(srv):                   srv,
		events.CredentialSubject(srv, "mcp_cred_1"): srv,
		events.UseSubject(srv, "mcp_cred_1"):        srv,
		events.ToolsSubject(srv):                    srv,
		events.ExpiredSubject(srv, "mcp_cred_1"):    srv,
		events.OwnerSubject("ok_1"):                 "",
		events.KeysSubject:                          "",
		events.RejectionSubject(7):                  "",
		"vault." + srv:                              "",
		"other." + srv + ".server":                  "",
	} {
		got, ok := treeOf(subject)
		if got != want || ok != (want != "") {
			t.Errorf("treeOf(%q) = %q, %v; want %q", subject, got, ok, want)
		}
	}
}

// needFor: a tree read waits for its tree's newest event and the newest
// event outside every tree, capped at its target, once the follower has
// seen the target; otherwise (or before the read model reached the
// follower's start) for the target.
func TestNeedFor(t *testing.T) {
	srvA, srvB := "mcp_srv_a", "mcp_srv_b"
	v := &Vault{}
	b := &v.barrier
	if need, known := b.needFor(srvA, 10); need != 10 || !known {
		t.Fatalf("no follower: %d %v, want the target", need, known)
	}
	b.advance(100)
	v.followFrom(100)
	v.followed(101, events.ServerSubject(srvA))
	v.followed(102, events.CredentialSubject(srvB, "mcp_cred_1"))
	v.followed(103, events.CredentialSubject(srvB, "mcp_cred_2"))
	for _, c := range []struct {
		tree   string
		target uint64
		need   uint64
		known  bool
	}{
		{srvA, 103, 101, true},      // A's newest event
		{srvB, 103, 103, true},      //
		{"mcp_srv_c", 103, 0, true}, // nothing of C unapplied
		{srvB, 102, 102, true},      // B's newest is past the target: capped
		{srvA, 104, 104, false},     // the follower has not seen 104
		{"", 103, 103, true},        // not a tree read
	} {
		if need, known := b.needFor(c.tree, c.target); need != c.need || known != c.known {
			t.Errorf("needFor(%s, %d) = %d, %v; want %d, %v", c.tree, c.target, need, known, c.need, c.known)
		}
	}
	// An event outside every tree is needed by every tree read.
	v.followed(104, events.OwnerSubject("ok_1"))
	v.followed(105, events.ServerSubject(srvB))
	if need, _ := b.needFor("mcp_srv_c", 105); need != 104 {
		t.Errorf("after an owner erasure: need %d, want 104", need)
	}
	// The read model behind the follower's start: the target.
	v.followFrom(200)
	v.followed(201, events.ServerSubject(srvB))
	if need, known := b.needFor(srvA, 201); need != 201 || !known {
		t.Errorf("read model at 100, follower from 200: %d %v, want the target", need, known)
	}
	b.advance(200)
	if need, _ := b.needFor(srvA, 201); need != 0 {
		t.Errorf("read model at the follower's start: need %d, want 0", need)
	}
	// The stream went back (restored): the follower stops (FollowTrees
	// starts it again from the stream's end).
	if err := v.followed(150, events.ServerSubject(srvA)); !errors.Is(err, errStreamWentBack) {
		t.Errorf("a sequence seen before: %v", err)
	}
	if need, known := b.needFor(srvB, 150); need != 150 || !known {
		t.Errorf("after the stream went back: %d %v, want the target", need, known)
	}
	v.followStopped()
	if need, known := b.needFor("mcp_srv_c", 150); need != 150 || !known {
		t.Errorf("follower stopped: %d %v, want the target", need, known)
	}
}

// The map of trees is pruned of applied entries as it grows, and cleared
// when too many trees are pending (the read model far behind).
func TestFollowedTreesStayBounded(t *testing.T) {
	v := &Vault{}
	b := &v.barrier
	v.followFrom(0)
	seq := uint64(0)
	for i := range 10 * minPrune {
		seq++
		v.followed(seq, events.ServerSubject(fmt.Sprintf("mcp_srv_%d", i)))
		b.advance(seq - 1) // the read model one event behind
	}
	if n := len(b.follow.trees); n > 2*minPrune {
		t.Fatalf("%d trees kept with the read model one event behind", n)
	}
	if need, _ := b.needFor(fmt.Sprintf("mcp_srv_%d", 10*minPrune-1), seq); need != seq {
		t.Fatalf("the newest tree: need %d, want %d", need, seq)
	}
	for i := range maxFollowedTrees + 1 {
		seq++
		v.followed(seq, events.ServerSubject(fmt.Sprintf("mcp_srv_x%d", i)))
	}
	if n := len(b.follow.trees); n > maxFollowedTrees {
		t.Fatalf("%d trees kept, bound %d", n, maxFollowedTrees)
	}
	// Cleared: the read model is behind the new start, so reads wait for their targets.
	if need, known := b.needFor("mcp_srv_y", seq); need != seq || !known {
		t.Fatalf("after clearing: %d %v, want the target", need, known)
	}
}

// A tree read whose target the follower has not reached is released by the
// follower's progress; the follower does not wake reads waiting for the
// read model (their channel stays open), and a read of no tree still waits
// for the read model to apply its target.
func TestFollowerReleasesTreeReads(t *testing.T) {
	db, err := projections.Open(context.Background(), filepath.Join(t.TempDir(), "rm.sqlite"), projections.Writer)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	v := &Vault{DB: db, SyncTimeout: 5 * time.Second}
	b := &v.barrier
	b.watched.Store(true)
	b.advance(10)
	v.followFrom(10)
	wait := func(tree string, target uint64) <-chan error {
		done := make(chan error, 1)
		go func() { done <- v.waitApplied(context.Background(), tree, target) }()
		return done
	}
	treeRead, plainRead := wait("mcp_srv_a", 12), wait("", 12)
	time.Sleep(20 * time.Millisecond) // both are waiting
	changed := b.wake(&b.changed)
	v.followed(11, events.ServerSubject("mcp_srv_b"))
	v.followed(12, events.CredentialSubject("mcp_srv_b", "mcp_cred_1"))
	select {
	case err := <-treeRead:
		if err != nil {
			t.Fatalf("tree read: %v", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("a read of tree A was not released once the follower saw that events 11 and 12 are of tree B")
	}
	select {
	case <-changed:
		t.Fatal("the follower's progress woke the reads waiting for the read model")
	default:
	}
	select {
	case err := <-plainRead:
		t.Fatalf("a read of no tree went on before the read model applied its target: %v", err)
	case <-time.After(50 * time.Millisecond):
	}
	b.advance(12)
	if err := <-plainRead; err != nil {
		t.Fatalf("read of no tree: %v", err)
	}
	if s := v.BarrierStats(); s.Unrelated != 0 || s.Waits != 2 {
		t.Fatalf("stats %+v: want 2 waits, none counted unrelated (both waited)", s)
	}
}
