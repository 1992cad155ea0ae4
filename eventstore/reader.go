package eventstore

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Stored is one message of the event stream as an auditor sees it: where it
// is, what it says, and the headers it was published with (the audit
// signature and chain link).
type Stored = Msg

// Reader reads the event stream without creating or changing anything, so
// it works with the NATS permissions of the audit role.
type Reader struct {
	js     jetstream.JetStream
	stream jetstream.Stream
	name   string
}

// NewReader binds to an existing event stream.
func NewReader(ctx context.Context, nc *nats.Conn, stream string) (*Reader, error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	st, err := js.Stream(ctx, stream)
	if err != nil {
		return nil, fmt.Errorf("%w: stream %s: %v", ErrUnavailable, stream, err)
	}
	return &Reader{js: js, stream: st, name: stream}, nil
}

// LastSeq is the sequence of the newest message in the stream.
func (r *Reader) LastSeq(ctx context.Context) (uint64, error) {
	info, err := r.stream.Info(ctx)
	if err != nil {
		return 0, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	return info.State.LastSeq, nil
}

// Get returns the message stored at seq.
func (r *Reader) Get(ctx context.Context, seq uint64) (Stored, error) {
	m, err := r.stream.GetMsg(ctx, seq)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return Stored{}, fmt.Errorf("no message at sequence %d", seq)
	}
	if err != nil {
		return Stored{}, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	return Stored{Seq: m.Sequence, Subject: m.Subject, Data: m.Data, Header: m.Header, Time: m.Time}, nil
}

// Walk delivers the messages from start (filtered by subject when filter is
// not empty) in stream order, up to the last one stored when Walk began, and
// returns. An error from fn stops the walk and is returned.
func (r *Reader) Walk(ctx context.Context, start uint64, filter string, fn func(Stored) error) error {
	last, err := r.LastSeq(ctx)
	if err != nil {
		return err
	}
	if last < max(start, 1) {
		return nil
	}
	cfg := jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverByStartSequencePolicy, OptStartSeq: max(start, 1)}
	if filter != "" {
		cfg.FilterSubjects = []string{filter}
	}
	cons, err := r.js.OrderedConsumer(ctx, r.name, cfg)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	info := cons.CachedInfo()
	if info != nil && info.NumPending == 0 {
		return nil
	}
	it, err := cons.Messages(jetstream.PullMaxMessages(500))
	if err != nil {
		return fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	defer it.Stop()
	return eachMsg(ctx, it, func(m Msg) (bool, error) {
		if err := fn(m); err != nil {
			return true, err
		}
		return m.Pending == 0 || m.Seq >= last, nil
	})
}

// Publish appends a message with headers (an operator's signed event). It
// never overwrites: msgID deduplicates retries.
func (r *Reader) Publish(ctx context.Context, subject string, data []byte, header map[string]string, msgID string) (uint64, error) {
	m := nats.NewMsg(subject)
	m.Data = data
	for k, v := range header {
		m.Header.Set(k, v)
	}
	ack, err := r.js.PublishMsg(ctx, m, jetstream.WithMsgID(msgID))
	if err != nil {
		return 0, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	return ack.Sequence, nil
}

// TailOptions configure a durable tail.
type TailOptions struct {
	// Durable is the consumer name; the server remembers its position.
	Durable string
	// StartSeq or StartTime choose where a new consumer starts (default: the
	// beginning). They are ignored when the consumer exists: it resumes.
	StartSeq  uint64
	StartTime time.Time
	// Filter restricts the subjects (default vault.>).
	Filter string
	// StopAtEnd returns once the consumer has delivered everything stored.
	StopAtEnd bool
	// Batch is the most messages handled before acknowledging (default 100).
	Batch int
}

// Tail delivers the stream through a durable consumer, in order, in batches:
// fn handles every message of a batch, then the last one is acknowledged
// synchronously (ack-all), so a tail stopped between batches resumes after
// the last message handled, with no gap and no repeat. A tail killed inside a
// batch sees that batch again (at least once; the sequences tell).
func (r *Reader) Tail(ctx context.Context, o TailOptions, fn func([]Stored) error) error {
	if o.Batch <= 0 {
		o.Batch = 100
	}
	if o.Filter == "" {
		o.Filter = "vault.>"
	}
	cons, err := r.stream.Consumer(ctx, o.Durable)
	if errors.Is(err, jetstream.ErrConsumerNotFound) {
		cfg := jetstream.ConsumerConfig{
			Durable: o.Durable, Description: "vaultctl audit tail",
			AckPolicy: jetstream.AckAllPolicy, AckWait: 10 * time.Second,
			MaxAckPending: o.Batch, FilterSubject: o.Filter,
			DeliverPolicy: jetstream.DeliverAllPolicy, InactiveThreshold: 30 * 24 * time.Hour,
		}
		switch {
		case o.StartSeq > 0:
			cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, o.StartSeq
		case !o.StartTime.IsZero():
			t := o.StartTime
			cfg.DeliverPolicy, cfg.OptStartTime = jetstream.DeliverByStartTimePolicy, &t
		}
		cons, err = r.stream.CreateConsumer(ctx, cfg)
	}
	if err != nil {
		return fmt.Errorf("%w: consumer %s: %v", ErrUnavailable, o.Durable, err)
	}
	for {
		if ctx.Err() != nil {
			return nil
		}
		wait := 2 * time.Second
		if o.StopAtEnd {
			wait = 500 * time.Millisecond
		}
		batch, err := cons.Fetch(o.Batch, jetstream.FetchMaxWait(wait))
		if err != nil {
			return fmt.Errorf("%w: %v", ErrUnavailable, err)
		}
		var (
			out  []Stored
			last jetstream.Msg
		)
		for m := range batch.Messages() {
			md, err := m.Metadata()
			if err != nil {
				return err
			}
			out = append(out, Stored{Seq: md.Sequence.Stream, Subject: m.Subject(), Data: m.Data(), Header: m.Headers(), Time: md.Timestamp, Pending: md.NumPending})
			last = m
		}
		if batch.Error() != nil && !errors.Is(batch.Error(), jetstream.ErrNoMessages) && !errors.Is(batch.Error(), nats.ErrTimeout) {
			return fmt.Errorf("%w: %v", ErrUnavailable, batch.Error())
		}
		if len(out) == 0 {
			if o.StopAtEnd {
				return nil
			}
			continue
		}
		if err := fn(out); err != nil {
			return err
		}
		// The handled batch is acknowledged even when ctx has just ended, so a
		// stopped tail never sees it again.
		actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		err = last.DoubleAck(actx)
		cancel()
		if err != nil {
			return fmt.Errorf("%w: acknowledging: %v", ErrUnavailable, err)
		}
		if o.StopAtEnd && out[len(out)-1].Pending == 0 {
			return nil
		}
	}
}

// LastOnSubject returns the last message stored on a literal subject (Seq 0
// when there is none): the predecessor an appended event links to.
func (r *Reader) LastOnSubject(ctx context.Context, subject string) (Stored, error) {
	m, err := r.stream.GetLastMsgForSubject(ctx, subject)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return Stored{}, nil
	}
	if err != nil {
		return Stored{}, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	return Stored{Seq: m.Sequence, Subject: m.Subject, Data: m.Data, Header: m.Header, Time: m.Time}, nil
}
