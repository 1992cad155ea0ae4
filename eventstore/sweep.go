package eventstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// StoredKey is one wrapped data key in the keys stream (its bytes not read).
type StoredKey struct {
	CredentialID string
	Stored       time.Time
}

// ListKeys lists every data key in the keys stream, with when it was
// stored, reading headers only (the wrapped keys never leave the server).
func (s *Store) ListKeys(ctx context.Context) ([]StoredKey, error) {
	info, err := s.keys.Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	if info.State.Msgs == 0 {
		return nil, nil
	}
	cons, err := s.JS.OrderedConsumer(ctx, s.cfg.KeysStreamName(), jetstream.OrderedConsumerConfig{
		DeliverPolicy: jetstream.DeliverAllPolicy,
		HeadersOnly:   true,
	})
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	it, err := cons.Messages(jetstream.PullMaxMessages(1000))
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	defer it.Stop()
	prefix := s.cfg.keySubject("")
	var out []StoredKey
	for {
		// Keys destroyed while the walk runs (the data-key pool destroys
		// unused ones all the time) may be the ones NumPending still
		// counted: a walk that waits a while for nothing ends with what it
		// has (a key it missed is swept next time).
		nctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		m, err := it.Next(jetstream.NextContext(nctx))
		cancel()
		if err != nil && ctx.Err() == nil && errors.Is(err, context.DeadlineExceeded) {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrUnavailable, err)
		}
		md, err := m.Metadata()
		if err != nil {
			return nil, err
		}
		if id, ok := strings.CutPrefix(m.Subject(), prefix); ok {
			out = append(out, StoredKey{CredentialID: id, Stored: md.Timestamp})
		}
		if md.NumPending == 0 {
			return out, nil
		}
	}
}

// LastEvent returns the newest event of the event stream on filter (which
// may hold wildcards: this is a lookup for sweeps, not for the write path)
// and whether there is one.
func (s *Store) LastEvent(ctx context.Context, filter string) (subject string, data []byte, found bool, err error) {
	req, _ := json.Marshal(map[string]string{"last_by_subj": filter})
	// The JSON API, not a direct get: direct gets take the filter in their
	// subject, where wildcards are not allowed.
	resp, err := s.NC.RequestWithContext(ctx, "$JS.API.STREAM.MSG.GET."+s.cfg.Stream, req)
	if err != nil {
		return "", nil, false, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	var r struct {
		Message *struct {
			Subject string `json:"subject"`
			Data    []byte `json:"data"`
		} `json:"message"`
		Error *struct {
			Code        int    `json:"code"`
			ErrCode     int    `json:"err_code"`
			Description string `json:"description"`
		} `json:"error"`
	}
	if err := json.Unmarshal(resp.Data, &r); err != nil {
		return "", nil, false, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	switch {
	case r.Error != nil && r.Error.ErrCode == int(jetstream.JSErrCodeMessageNotFound):
		return "", nil, false, nil
	case r.Error != nil:
		return "", nil, false, fmt.Errorf("%w: %s", ErrUnavailable, r.Error.Description)
	case r.Message == nil:
		return "", nil, false, errors.New("eventstore: empty message get answer")
	}
	return r.Message.Subject, r.Message.Data, true, nil
}
