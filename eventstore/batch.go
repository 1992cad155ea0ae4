package eventstore

import (
	"context"
	"errors"
	"sync"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/synadia-io/orbit.go/jetstreamext"
)

// Group commit. With fsync on every write (sync_interval: always) each
// single publish waits for its own fsync. When group commit is on, the
// first attempt of each Append (and PutKey) goes to a committer per stream,
// which sends whatever appends arrived while its previous commit was in
// flight as one JetStream atomic batch: one round trip and one fsync for
// the lot, while every message keeps its own message id and its own
// expectation (JetStream checks each against the stream as it was before
// the batch).
//
// The batch is only an optimisation of the first attempt. Its outcome is
// either certain for every message (committed: each gets its sequence;
// refused with an API error: none is stored) or unknown for every message
// (timeout, disconnect). Refused or unknown, each message goes on alone
// through the single-message path of Append, with its outcome resolved the
// same way as any other: a batch failure never turns into an error answer
// for a stored write, a duplicate or a lost key.

// maxBatch bounds the messages in one atomic batch.
const maxBatch = 64

// batchResult is what a committer tells one appender.
type batchResult struct {
	ack *jetstream.PubAck
	// alone: the batch did not commit for certain; the message is not
	// known to be stored unless uncertain is set.
	alone     bool
	uncertain bool
}

type batchReq struct {
	msg  *nats.Msg
	done chan batchResult
}

type committer struct {
	s     *Store
	queue chan *batchReq
}

func (s *Store) startCommitters() {
	s.eventsBatch = s.startCommitter()
	s.keysBatch = s.startCommitter()
}

// startCommitter starts one committer; Close stops it.
func (s *Store) startCommitter() *committer {
	c := &committer{s: s, queue: make(chan *batchReq, 4096)}
	s.wg.Add(1)
	go c.run(s.stop, &s.wg)
	return c
}

// submit hands m to the committer and waits for its batch's outcome.
func (c *committer) submit(ctx context.Context, m *nats.Msg) batchResult {
	r := &batchReq{msg: m, done: make(chan batchResult, 1)}
	select {
	case c.queue <- r:
	case <-c.s.stop:
		return batchResult{alone: true}
	case <-ctx.Done():
		return batchResult{alone: true}
	}
	return <-r.done
}

// drain answers whatever is still queued once the committer stops.
func (c *committer) drain() {
	for {
		select {
		case r := <-c.queue:
			r.done <- batchResult{alone: true}
		default:
			return
		}
	}
}

func (c *committer) run(stop chan struct{}, wg *sync.WaitGroup) {
	defer wg.Done()
	var carry []*batchReq
	for {
		var first *batchReq
		if len(carry) > 0 {
			first, carry = carry[0], carry[1:]
		} else {
			select {
			case first = <-c.queue:
			case <-stop:
				c.drain()
				return
			}
		}
		group := append([]*batchReq{first}, carry...)
		carry = nil
	fill:
		for len(group) < maxBatch {
			select {
			case r := <-c.queue:
				group = append(group, r)
			default:
				break fill
			}
		}
		batch, later := splitBatch(group)
		carry = later
		c.commit(batch)
	}
}

// splitBatch keeps, in order, the requests that may share one atomic
// batch: JetStream refuses a batch in which a message's expectation names
// a subject an earlier message of the batch writes, and two messages on one
// subject would make the second's check stale. Messages without an
// expectation (use records) may share a subject. The rest wait for the
// next batch, and so does every later message on a subject one of them
// writes, so that each subject keeps its order.
func splitBatch(group []*batchReq) (batch, later []*batchReq) {
	written, deferred := map[string]bool{}, map[string]bool{}
	for _, r := range group {
		expect := r.msg.Header.Get(jetstream.ExpectedLastSubjSeqSubjHeader)
		if expect == "" && r.msg.Header.Get(jetstream.ExpectedLastSubjSeqHeader) != "" {
			expect = r.msg.Subject
		}
		if deferred[r.msg.Subject] || (expect != "" && (written[expect] || deferred[expect])) {
			deferred[r.msg.Subject] = true
			later = append(later, r)
			continue
		}
		written[r.msg.Subject] = true
		batch = append(batch, r)
	}
	return batch, later
}

func (c *committer) commit(batch []*batchReq) {
	ctx, cancel := context.WithTimeout(context.Background(), c.s.batchTimeout())
	defer cancel()
	var apiErr *jetstream.APIError
	if len(batch) == 1 {
		// A single publish is cheaper than a batch of one. The committer
		// makes it itself, so that what arrives meanwhile queues up and
		// goes as the next batch.
		ack, err := c.s.JS.PublishMsg(ctx, copyMsg(batch[0].msg))
		switch {
		case err == nil:
			batch[0].done <- batchResult{ack: ack}
		case errors.As(err, &apiErr), errors.Is(err, nats.ErrNoResponders), errors.Is(err, jetstream.ErrNoStreamResponse):
			batch[0].done <- batchResult{alone: true}
		default:
			batch[0].done <- batchResult{alone: true, uncertain: true}
		}
		return
	}
	msgs := make([]*nats.Msg, len(batch))
	for i, r := range batch {
		msgs[i] = copyMsg(r.msg)
	}
	ack, err := jetstreamext.PublishMsgBatch(ctx, c.s.JS, msgs, jetstreamext.BatchFlowControl{AckFirst: false})
	switch {
	case err == nil && ack.BatchSize == uint64(len(batch)):
		c.s.stats.batches.Add(1)
		c.s.stats.batched.Add(uint64(len(batch)))
		first := ack.Sequence - uint64(len(batch)) + 1
		for i, r := range batch {
			r.done <- batchResult{ack: &jetstream.PubAck{Stream: ack.Stream, Sequence: first + uint64(i)}}
		}
	case err != nil && (errors.As(err, &apiErr) || errors.Is(err, nats.ErrNoResponders)):
		// Refused as a whole: nothing of it is stored.
		c.s.stats.fallbacks.Add(1)
		for _, r := range batch {
			r.done <- batchResult{alone: true}
		}
	default:
		c.s.stats.fallbacks.Add(1)
		for _, r := range batch {
			r.done <- batchResult{alone: true, uncertain: true}
		}
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

// GroupStats counts what group commit did.
type GroupStats struct {
	Batches   uint64 // atomic batches committed
	Batched   uint64 // messages committed in them
	Fallbacks uint64 // batches not committed for certain, whose messages went on alone
}

// GroupStats returns the counters.
func (s *Store) GroupStats() GroupStats {
	return GroupStats{Batches: s.stats.batches.Load(), Batched: s.stats.batched.Load(), Fallbacks: s.stats.fallbacks.Load()}
}

// Close stops the committers; appends still running fall back to single
// publishes. The connection is the caller's.
func (s *Store) Close() {
	if s.stop != nil {
		s.stopOnce.Do(func() { close(s.stop) })
		s.wg.Wait()
	}
}
