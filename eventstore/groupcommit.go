package eventstore

import (
	"context"
	"strconv"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/synadia-io/orbit.go/jetstreamext"
)

// Group commit: with fsync on every write (sync_interval: always) each
// per-message publish waits for its own fsync. Appends that arrive while a
// commit is in flight are instead committed together as one atomic batch —
// one round trip and one sync for the lot. Every message keeps its own
// Nats-Msg-Id and expected-last-sequence check, and every caller still gets
// its own durable ack. If the batch fails as a whole (one message's check
// failed, a duplicate, a timeout), each message is published again on its
// own, so a conflict in one request fails only that request (deduplication
// makes the retry safe if the batch was in fact stored).

const maxGroup = 64

// GroupStats counts what group commit did.
type GroupStats struct {
	Batches   uint64 // atomic batches committed
	Batched   uint64 // messages committed in them
	Fallbacks uint64 // batches that failed and were published one by one
}

// GroupStats returns the counters.
func (s *Store) GroupStats() GroupStats {
	return GroupStats{Batches: s.stats.batches.Load(), Batched: s.stats.batched.Load(), Fallbacks: s.stats.fallbacks.Load()}
}

type appendReq struct {
	ctx  context.Context
	msg  *nats.Msg
	done chan appendRes
}

type appendRes struct {
	seq uint64
	dup bool
	err error
}

// EnableGroupCommit starts the committers; call once after Open.
func (s *Store) EnableGroupCommit(workers int) {
	s.queue = make(chan *appendReq, 4096)
	for i := 0; i < max(workers, 1); i++ {
		go s.committer()
	}
}

func (s *Store) committer() {
	for first := range s.queue {
		group := []*appendReq{first}
	fill:
		for len(group) < maxGroup {
			select {
			case r := <-s.queue:
				group = append(group, r)
			default:
				break fill
			}
		}
		s.commit(group)
	}
}

func (s *Store) commit(group []*appendReq) {
	live := group[:0]
	for _, r := range group {
		if r.ctx.Err() != nil {
			r.done <- appendRes{err: r.ctx.Err()}
			continue
		}
		live = append(live, r)
	}
	// JetStream evaluates the expected-last-sequence check of every message
	// in a batch against the stream as it was before the batch (and only
	// guards literal subjects), so two appends under one filter must not
	// share a batch: the second would pass a check the first made stale — a
	// lost update. Such later appends are published alone after the batch,
	// where their check sees it.
	var alone []*appendReq
	if len(live) > 1 {
		filters := map[string]bool{}
		batch := make([]*appendReq, 0, len(live))
		for _, r := range live {
			if f := r.msg.Header.Get(jetstream.ExpectedLastSubjSeqSubjHeader); f != "" {
				if filters[f] {
					alone = append(alone, r)
					continue
				}
				filters[f] = true
			}
			batch = append(batch, r)
		}
		live = batch
	}
	if len(live) > 1 {
		msgs := make([]*nats.Msg, len(live))
		for i, r := range live {
			msgs[i] = copyMsg(r.msg)
		}
		ack, err := jetstreamext.PublishMsgBatch(live[0].ctx, s.JS, msgs, jetstreamext.BatchFlowControl{AckFirst: false})
		if err == nil && ack.BatchSize == uint64(len(live)) {
			s.stats.batches.Add(1)
			s.stats.batched.Add(uint64(len(live)))
			first := ack.Sequence - uint64(len(live)) + 1
			for i, r := range live {
				r.done <- appendRes{seq: first + uint64(i)}
			}
			live = live[:0]
		} else {
			s.stats.fallbacks.Add(1)
		}
	}
	for _, r := range append(live, alone...) {
		ack, err := s.JS.PublishMsg(r.ctx, r.msg)
		if err != nil {
			r.done <- appendRes{err: err}
			continue
		}
		r.done <- appendRes{seq: ack.Sequence, dup: ack.Duplicate}
	}
}

func copyMsg(m *nats.Msg) *nats.Msg {
	c := nats.NewMsg(m.Subject)
	c.Data = m.Data
	for k, v := range m.Header {
		c.Header[k] = append([]string(nil), v...)
	}
	return c
}

// publishGrouped enqueues one append and waits for its own ack.
func (s *Store) publishGrouped(ctx context.Context, subject string, data []byte, msgID, expect string, expectSeq uint64) (uint64, bool, error) {
	m := nats.NewMsg(subject)
	m.Data = data
	m.Header.Set(jetstream.MsgIDHeader, msgID)
	if expect != "" {
		m.Header.Set(jetstream.ExpectedLastSubjSeqHeader, strconv.FormatUint(expectSeq, 10))
		m.Header.Set(jetstream.ExpectedLastSubjSeqSubjHeader, expect)
	}
	r := &appendReq{ctx: ctx, msg: m, done: make(chan appendRes, 1)}
	select {
	case s.queue <- r:
	case <-ctx.Done():
		return 0, false, ctx.Err()
	}
	res := <-r.done
	return res.seq, res.dup, res.err
}
