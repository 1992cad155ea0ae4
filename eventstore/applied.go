package eventstore

import (
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
)

// AppliedSubject is the core NATS subject on which the projector writing
// the read model file with instance id instance announces each committed
// batch (projections.DB.InstanceID). It lies outside vault.>, so the event
// stream never stores it.
func AppliedSubject(stream, instance string) string {
	if stream == "" {
		stream = "VAULT" // as Open
	}
	return "vaultapplied." + strings.ToLower(stream) + "." + instance
}

// PublishApplied announces that the read model instance has committed every
// event up to seq (payload: seq in decimal). Core NATS delivers it at most
// once; readers cover a lost announcement by reading the read model.
func PublishApplied(nc *nats.Conn, stream, instance string, seq uint64) error {
	return nc.Publish(AppliedSubject(stream, instance), strconv.AppendUint(nil, seq, 10))
}

// maxAppliedPayload bounds an announcement (a uint64 in decimal is at most
// 20 digits); anything else on the subject is ignored.
const maxAppliedPayload = 20

// WatchApplied subscribes to the announcements of read model instance:
// onSeq gets each announced sequence (in arrival order; the caller keeps the
// maximum). onResync is called once the subscription is registered with the
// server and after every reconnect, when announcements may have been lost:
// the caller then reads the read model's sequence itself. stop ends it.
func WatchApplied(nc *nats.Conn, stream, instance string, onSeq func(uint64), onResync func()) (stop func(), err error) {
	sub, err := nc.Subscribe(AppliedSubject(stream, instance), func(m *nats.Msg) {
		if len(m.Data) == 0 || len(m.Data) > maxAppliedPayload {
			return
		}
		if seq, err := strconv.ParseUint(string(m.Data), 10, 64); err == nil {
			onSeq(seq)
		}
	})
	if err != nil {
		return nil, err
	}
	// Announcements are tiny and frequent: never drop them for slowness.
	_ = sub.SetPendingLimits(-1, -1)
	status := nc.StatusChanged(nats.CONNECTED)
	done := make(chan struct{})
	go func() {
		// Once the server has the interest, nothing announced from now on
		// is missed; what came before is in the read model.
		_ = nc.FlushTimeout(2 * time.Second)
		onResync()
		for {
			select {
			case <-done:
				return
			case _, ok := <-status:
				if !ok {
					return
				}
				_ = nc.FlushTimeout(2 * time.Second)
				onResync()
			}
		}
	}()
	return func() {
		close(done)
		nc.RemoveStatusListener(status)
		_ = sub.Unsubscribe()
	}, nil
}
