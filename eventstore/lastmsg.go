package eventstore

import (
	"context"
	"errors"
)

// LastOnSubject returns the data and sequence of the newest event on a
// literal subject of the event stream, or seq 0 and no data when the subject
// has none. It is how the command side reads the state it decides on (for
// instance a server's recorded tool inventory) without the read model.
func (s *Store) LastOnSubject(ctx context.Context, subject string) ([]byte, uint64, error) {
	m, err := s.events.last(ctx, subject)
	if errors.Is(err, ErrNotFound) {
		return nil, 0, nil
	}
	if err != nil {
		return nil, 0, err
	}
	return m.Data, m.Seq, nil
}

// LastSeqOf returns the highest sequence among the newest events of the
// given literal subjects (0 when none has any), asking the stream leader
// for each subject's last message at once (in parallel: one round trip; a
// batched direct get measured 1.3 ms against 0.15 ms for a single one). A reader
// waits for the read model to reach it to see every change of those
// subjects answered before the call, without waiting for unrelated events
// (such as the use events the MCP endpoint keeps appending).
func (s *Store) LastSeqOf(ctx context.Context, subjects ...string) (uint64, error) {
	if len(subjects) == 0 {
		return 0, nil
	}
	type answer struct {
		seq uint64
		err error
	}
	answers := make(chan answer, len(subjects))
	for _, subj := range subjects[1:] {
		go func() {
			_, seq, err := s.LastOnSubject(ctx, subj)
			answers <- answer{seq, err}
		}()
	}
	_, seq, err := s.LastOnSubject(ctx, subjects[0])
	answers <- answer{seq, err}
	var last uint64
	for range subjects {
		a := <-answers
		if a.err != nil && err == nil {
			err = a.err
		}
		last = max(last, a.seq)
	}
	return last, err
}
