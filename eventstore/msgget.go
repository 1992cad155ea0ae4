package eventstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
)

// ErrNotFound: no message matches (the subject has none, or none after the
// given sequence or time).
var ErrNotFound = errors.New("eventstore: no such message")

// Msg is one stored message.
type Msg struct {
	Subject string
	Seq     uint64
	Header  nats.Header
	Data    []byte
	Time    time.Time
	// Pending is set by Follow: messages still in the stream after this one.
	Pending uint64
}

// leaderGets reads single messages of one stream through the stream
// leader ($JS.API.STREAM.MSG.GET), never through a direct get, which a
// replica that has not yet applied a just-acknowledged message may answer.
// Write decisions and data-key reads need what was acknowledged.
type leaderGets struct {
	nc      *nats.Conn
	subject string // $JS.API.STREAM.MSG.GET.<stream>
	timeout time.Duration
}

func newLeaderGets(nc *nats.Conn, stream string, timeout time.Duration) leaderGets {
	return leaderGets{nc: nc, subject: "$JS.API.STREAM.MSG.GET." + stream, timeout: timeout}
}

type msgGetRequest struct {
	Seq       uint64     `json:"seq,omitempty"`
	LastFor   string     `json:"last_by_subj,omitempty"`
	NextFor   string     `json:"next_by_subj,omitempty"`
	StartTime *time.Time `json:"start_time,omitempty"`
}

type msgGetResponse struct {
	Message *struct {
		Subject string    `json:"subject"`
		Seq     uint64    `json:"seq"`
		Header  []byte    `json:"hdrs,omitempty"`
		Data    []byte    `json:"data,omitempty"`
		Time    time.Time `json:"time"`
	} `json:"message"`
	Error *struct {
		Code        int    `json:"code"`
		ErrCode     int    `json:"err_code"`
		Description string `json:"description"`
	} `json:"error"`
}

const errCodeMessageNotFound = 10037

func (g leaderGets) get(ctx context.Context, req msgGetRequest) (Msg, error) {
	body, err := json.Marshal(req)
	if err != nil {
		return Msg{}, err
	}
	if g.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, g.timeout)
		defer cancel()
	}
	reply, err := g.nc.RequestWithContext(ctx, g.subject, body)
	if err != nil {
		return Msg{}, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	var resp msgGetResponse
	if err := json.Unmarshal(reply.Data, &resp); err != nil {
		return Msg{}, fmt.Errorf("%w: message get: %v", ErrUnavailable, err)
	}
	if resp.Error != nil {
		if resp.Error.ErrCode == errCodeMessageNotFound {
			return Msg{}, ErrNotFound
		}
		return Msg{}, fmt.Errorf("%w: message get: %s (%d)", ErrUnavailable, resp.Error.Description, resp.Error.ErrCode)
	}
	if resp.Message == nil {
		return Msg{}, fmt.Errorf("%w: message get: empty answer", ErrUnavailable)
	}
	m := Msg{Subject: resp.Message.Subject, Seq: resp.Message.Seq, Data: resp.Message.Data, Time: resp.Message.Time}
	if len(resp.Message.Header) > 0 {
		if m.Header, err = nats.DecodeHeadersMsg(resp.Message.Header); err != nil {
			return Msg{}, fmt.Errorf("%w: message get: %v", ErrUnavailable, err)
		}
	}
	return m, nil
}

// last returns the newest message on a literal subject.
func (g leaderGets) last(ctx context.Context, subject string) (Msg, error) {
	return g.get(ctx, msgGetRequest{LastFor: subject})
}

// next returns the first message on subject at or after sequence seq.
func (g leaderGets) next(ctx context.Context, subject string, seq uint64) (Msg, error) {
	return g.get(ctx, msgGetRequest{Seq: max(seq, 1), NextFor: subject})
}

// firstSince returns the first message on subject stored at or after t.
func (g leaderGets) firstSince(ctx context.Context, subject string, t time.Time) (Msg, error) {
	t = t.UTC()
	return g.get(ctx, msgGetRequest{NextFor: subject, StartTime: &t})
}

// Last returns the newest event on a literal subject (ErrNotFound if none).
func (s *Store) Last(ctx context.Context, subject string) (Msg, error) {
	return s.events.last(ctx, subject)
}

// First returns the oldest event on a literal subject (ErrNotFound if none).
func (s *Store) First(ctx context.Context, subject string) (Msg, error) {
	return s.events.next(ctx, subject, 1)
}

// Next returns the first event on subject at or after sequence seq.
func (s *Store) Next(ctx context.Context, subject string, seq uint64) (Msg, error) {
	return s.events.next(ctx, subject, seq)
}
