package app

import (
	"context"
	"time"

	"github.com/mcpvault/vault/eventstore"
)

// seqFlight is one stream-sequence request shared by every read that joined
// it before it was sent.
type seqFlight struct {
	done chan struct{}
	seq  uint64
	err  error
}

// streamSeq returns the stream's last sequence as of some moment after the
// call began. Concurrent reads share one request: a caller joins the next
// request to be sent (never one already on the wire, whose answer could
// predate a write acknowledged before the caller arrived), so under load
// there is one request per round trip instead of one per read.
func (v *Vault) streamSeq(ctx context.Context, st *eventstore.Store) (uint64, error) {
	v.seq.Lock()
	if v.seq.next == nil {
		v.seq.next = &seqFlight{done: make(chan struct{})}
	}
	f := v.seq.next
	if !v.seq.running {
		v.seq.running = true
		v.seq.next = nil
		go v.fetchSeqs(st, f)
	}
	v.seq.Unlock()
	select {
	case <-f.done:
		return f.seq, f.err
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

// fetchSeqs sends f, then whatever flight gathered meanwhile, until none did.
func (v *Vault) fetchSeqs(st *eventstore.Store, f *seqFlight) {
	for f != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		f.seq, f.err = st.LastSeq(ctx)
		cancel()
		close(f.done)
		v.seq.Lock()
		f, v.seq.next = v.seq.next, nil
		if f == nil {
			v.seq.running = false
		}
		v.seq.Unlock()
	}
}
