package eventstore

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// ErrRestart may be returned by a Follow handler to make Follow return, so
// the caller can resume from another sequence.
var ErrRestart = errors.New("eventstore: restart from another sequence")

// Follow delivers the event stream from sequence start, in order, in batches
// of at most limit messages: a batch ends when limit is reached or when no more
// messages are pending, so a live tail is applied at once and a backlog in
// large transactions. Each batch is a new slice that handle may keep. It
// returns when ctx ends or handle returns an error.
func (s *Store) Follow(ctx context.Context, start uint64, limit int, handle func([]Msg) error) error {
	it, err := s.tail(ctx, start, false, jetstream.PullMaxMessages(2*limit))
	if err != nil {
		return err
	}
	defer it.Stop()
	batch := make([]Msg, 0, limit)
	return eachMsg(ctx, it, func(m Msg) (bool, error) {
		batch = append(batch, m)
		if len(batch) < limit && m.Pending > 0 {
			return false, nil
		}
		if err := handle(batch); err != nil {
			return true, err
		}
		batch = make([]Msg, 0, limit)
		return false, nil
	})
}

// eachMsg hands the messages of it to fn in order until fn says stop, fn
// fails, or ctx ends (ctx's error then).
func eachMsg(ctx context.Context, it jetstream.MessagesContext, fn func(Msg) (stop bool, err error)) error {
	for {
		m, err := it.Next(jetstream.NextContext(ctx))
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("%w: %v", ErrUnavailable, err)
		}
		md, err := m.Metadata()
		if err != nil {
			return err
		}
		stop, err := fn(Msg{Seq: md.Sequence.Stream, Subject: m.Subject(), Header: m.Headers(), Data: m.Data(),
			Time: md.Timestamp, Pending: md.NumPending})
		if stop || err != nil {
			return err
		}
	}
}

// FollowSubjects hands fn the sequence and subject of every event stored
// from sequence start on, in order, without their data (a headers-only
// ordered consumer: what a reader needs to know which events are still to be
// applied, at a fraction of the delivery's cost). It returns when ctx ends,
// the consumer fails or fn returns an error (that error).
func (s *Store) FollowSubjects(ctx context.Context, start uint64, fn func(seq uint64, subject string) error) error {
	it, err := s.tail(ctx, start, true)
	if err != nil {
		return err
	}
	defer it.Stop()
	return eachMsg(ctx, it, func(m Msg) (bool, error) {
		err := fn(m.Seq, m.Subject)
		return err != nil, err
	})
}

// tail opens an ordered consumer of the event stream from sequence start
// (headers only when headersOnly) and its message iterator, which the
// caller stops.
func (s *Store) tail(ctx context.Context, start uint64, headersOnly bool, opts ...jetstream.PullMessagesOpt) (jetstream.MessagesContext, error) {
	cons, err := s.JS.OrderedConsumer(ctx, s.cfg.Stream, jetstream.OrderedConsumerConfig{
		DeliverPolicy: jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:   max(start, 1),
		HeadersOnly:   headersOnly,
	})
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	// A heartbeat every second (the ordered consumer's default is 5 s): when
	// the server holding the consumer goes away (its stream leader stopped
	// or failed), two missed heartbeats make the client recreate it, so the
	// projector (and the API's subject follower) resumes within ~2 s instead
	// of ~10 s — longer than a read waits for it (503 read_model_behind
	// after 5 s).
	it, err := cons.Messages(append(opts, jetstream.PullHeartbeat(time.Second))...)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	return it, nil
}
