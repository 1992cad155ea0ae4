package eventstore

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// JetStream error codes nats.go does not name.
const (
	errCodeDuplicateInProcess jetstream.ErrorCode = 10158 // a message with this id is in process
	errCodeExpectedNotReady   jetstream.ErrorCode = 10163 // expected-per-subject check temporarily unavailable
)

// AppendOption sets one property of an Append.
type AppendOption func(*appendOpts)

type appendOpts struct {
	headers     map[string]string
	msgID       string
	expectSubj  string
	expectSeq   uint64
	expectGiven bool
	grouped     bool
}

// MsgID sets the message's Nats-Msg-Id. Every attempt of one logical write
// must use the same id: it is how JetStream (inside its deduplication
// window) and Append (when an outcome is unknown) recognise the message.
func MsgID(id string) AppendOption { return func(o *appendOpts) { o.msgID = id } }

// Headers adds message headers (the audit signature and chain link, see
// package audit).
func Headers(h map[string]string) AppendOption { return func(o *appendOpts) { o.headers = h } }

// ExpectLast makes the append conditional: it is stored only if the last
// message stored on the literal subject has sequence seq (0: no message
// yet). A literal subject keeps the check O(1) whatever the stream holds.
func ExpectLast(subject string, seq uint64) AppendOption {
	return func(o *appendOpts) { o.expectSubj, o.expectSeq, o.expectGiven = subject, seq, true }
}

// Grouped sends the first attempt through a committer that stores what
// accumulated meanwhile as one JetStream atomic batch (one round trip and,
// with sync_interval always, one fsync for the lot), even when group commit
// is off: for appends off any client's path, such as use records, where a
// batch's wait costs nobody and its fewer fsyncs save the stream's time.
func Grouped() AppendOption { return func(o *appendOpts) { o.grouped = true } }

// Ack is a stored message's place in the stream.
type Ack struct {
	Seq uint64
	// Duplicate: an earlier attempt with the same message id had stored it.
	Duplicate bool
}

// Append publishes one message and waits until its outcome is certain.
//
// It returns an Ack once the message is stored (by this call or by an
// earlier attempt with the same MsgID). ErrConflict and ErrUnavailable mean
// the message is certainly not stored. When a publish times out or the
// connection drops, the outcome is unknown: Append publishes again with the
// same message id until the stream answers (a duplicate ack carries the
// original sequence) or ctx ends; then it returns ErrUnknownOutcome, and the
// caller must not compensate (the message may be stored). A message whose
// expectation is on another subject (a credential created under its
// server's version) is looked for on its own subject before each repeat,
// so that a repeat later than the deduplication window cannot store it twice.
func (s *Store) Append(ctx context.Context, subject string, data []byte, opts ...AppendOption) (Ack, error) {
	var o appendOpts
	for _, opt := range opts {
		opt(&o)
	}
	if o.msgID == "" {
		return Ack{}, errors.New("eventstore: Append needs a MsgID")
	}
	m := nats.NewMsg(subject)
	m.Data = data
	for k, v := range o.headers {
		m.Header.Set(k, v)
	}
	m.Header.Set(jetstream.MsgIDHeader, o.msgID)
	if o.expectGiven {
		m.Header.Set(jetstream.ExpectedLastSubjSeqHeader, strconv.FormatUint(o.expectSeq, 10))
		if o.expectSubj != subject {
			m.Header.Set(jetstream.ExpectedLastSubjSeqSubjHeader, o.expectSubj)
		}
	}
	start := time.Now()
	defer func() { s.observePublish(time.Since(start)) }()

	uncertain := false // an earlier attempt may have stored the message
	c := s.eventsBatch
	if o.grouped && c == nil {
		c = s.usesBatch
	}
	if c != nil {
		res := c.submit(ctx, m)
		if res.ack != nil {
			return Ack{Seq: res.ack.Sequence, Duplicate: res.ack.Duplicate}, nil
		}
		uncertain = res.uncertain
	}
	wait := 25 * time.Millisecond
	for {
		if uncertain && o.expectGiven && o.expectSubj != subject {
			// The expectation is on another subject, so it does not stop a
			// repeat, and JetStream recognises a repeat by its id only
			// inside its deduplication window: look for the earlier attempt
			// first, and publish again only once it is known not stored.
			seq, found, ferr := s.findMsgID(ctx, subject, o)
			if ferr == nil && found {
				return Ack{Seq: seq, Duplicate: true}, nil
			}
			if ferr != nil {
				select {
				case <-ctx.Done():
					return Ack{}, fmt.Errorf("%w: %v", ErrUnknownOutcome, ferr)
				case <-time.After(wait):
				}
				wait = min(2*wait, 250*time.Millisecond)
				continue
			}
		}
		ack, err := s.publishOnce(ctx, m)
		if err == nil {
			return Ack{Seq: ack.Sequence, Duplicate: ack.Duplicate}, nil
		}
		var apiErr *jetstream.APIError
		switch {
		case errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence:
			if !uncertain {
				return Ack{}, fmt.Errorf("%w: %v", ErrConflict, err)
			}
			// A single server checks the expectation before the message
			// id, so a stored earlier attempt whose own subject is the
			// expectation's fails the check now. The stream tells.
			if seq, found, ferr := s.findMsgID(ctx, subject, o); ferr == nil {
				if found {
					return Ack{Seq: seq, Duplicate: true}, nil
				}
				return Ack{}, fmt.Errorf("%w: %v", ErrConflict, err)
			}
		case errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant ||
			apiErr.ErrorCode == errCodeDuplicateInProcess || apiErr.ErrorCode == errCodeExpectedNotReady):
			// A replicated stream has a message on this subject (or with
			// this id) in flight: try again once it is through.
		case errors.As(err, &apiErr):
			if !uncertain {
				return Ack{}, fmt.Errorf("%w: %v", ErrUnavailable, err)
			}
		case errors.Is(err, nats.ErrNoResponders), errors.Is(err, jetstream.ErrNoStreamResponse):
			// Nobody took the message (no stream leader right now).
			if !uncertain {
				return Ack{}, fmt.Errorf("%w: %v", ErrUnavailable, err)
			}
		case errors.Is(err, nats.ErrReconnectBufExceeded), errors.Is(err, nats.ErrConnectionReconnecting):
			// Not sent at all (the connection is down and buffers nothing).
			if !uncertain {
				return Ack{}, fmt.Errorf("%w: %v", ErrUnavailable, err)
			}
		default:
			// Timeout, disconnect, cancelled wait: sent, outcome unknown.
			uncertain = true
		}
		select {
		case <-ctx.Done():
			if !uncertain {
				return Ack{}, fmt.Errorf("%w: %v", ErrUnavailable, ctx.Err())
			}
			return Ack{}, fmt.Errorf("%w: %v", ErrUnknownOutcome, err)
		case <-time.After(wait):
		}
		wait = min(2*wait, 250*time.Millisecond)
	}
}

// publishOnce sends m and waits for its ack for at most one attempt's time
// (or what is left of ctx), so that a lost ack is retried while the
// deduplication window still recognises the message.
func (s *Store) publishOnce(ctx context.Context, m *nats.Msg) (*jetstream.PubAck, error) {
	actx, cancel := context.WithTimeout(ctx, s.cfg.AttemptTimeout)
	defer cancel()
	return s.JS.PublishMsg(actx, m)
}

// findMsgID looks for a message with o's id on subject, stored after the
// expectation the append carried (or anywhere on a subject the expectation
// did not cover, such as a new credential's). It reports the sequence.
func (s *Store) findMsgID(ctx context.Context, subject string, o appendOpts) (uint64, bool, error) {
	after := uint64(0)
	if o.expectSubj == subject {
		after = o.expectSeq
	}
	for i := 0; i < 64; i++ {
		m, err := s.events.next(ctx, subject, after+1)
		if errors.Is(err, ErrNotFound) {
			return 0, false, nil
		}
		if err != nil {
			return 0, false, err
		}
		if m.Header.Get(jetstream.MsgIDHeader) == o.msgID {
			return m.Seq, true, nil
		}
		after = m.Seq
	}
	return 0, false, errors.New("eventstore: message id not found in 64 messages")
}

// FindMsgID reports where the message with id was stored on subject, looking
// at the messages stored there since t (the start of the first attempt of
// the write, give or take clock skew). It answers a write whose first
// attempt's answer was lost, however long ago within the stream's retention.
func (s *Store) FindMsgID(ctx context.Context, subject, id string, since time.Time) (Msg, bool, error) {
	m, err := s.events.firstSince(ctx, subject, since)
	for i := 0; i < 1024; i++ {
		if errors.Is(err, ErrNotFound) {
			return Msg{}, false, nil
		}
		if err != nil {
			return Msg{}, false, err
		}
		if m.Header.Get(jetstream.MsgIDHeader) == id {
			return m, true, nil
		}
		m, err = s.events.next(ctx, subject, m.Seq+1)
	}
	return Msg{}, false, errors.New("eventstore: message id not found in 1024 messages")
}
