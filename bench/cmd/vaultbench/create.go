package main

import (
	"context"
	"fmt"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/mcpvault/vault/bench/loadgen"
	"github.com/mcpvault/vault/eventstore"
)

// owner is one benchmark end user (X-On-Behalf-Of) and its servers.
type owner struct {
	user    string
	servers []string
	next    atomic.Uint64
}

// setupOwners creates n owners with perOwner servers each over HTTP.
func setupOwners(ctx context.Context, base, prefix string, n, perOwner int) ([]*owner, error) {
	out := make([]*owner, n)
	for i := range out {
		o := &owner{user: fmt.Sprintf("%s%02d", prefix, i)}
		for j := 0; j < perOwner; j++ {
			var s struct {
				ID string `json:"id"`
			}
			if err := call(ctx, base, http.MethodPost, "/servers", o.user, serverBody, http.StatusCreated, &s); err != nil {
				return nil, err
			}
			o.servers = append(o.servers, s.ID)
		}
		out[i] = o
	}
	return out, nil
}

var bodies = func() [][]byte {
	b := make([][]byte, 64)
	for i := range b {
		b[i] = createBody()
	}
	return b
}()

func createOn(ctx context.Context, base string, o *owner, server string, i int) error {
	return call(ctx, base, http.MethodPost, "/servers/"+server+"/credentials", o.user, bodies[i%len(bodies)], http.StatusCreated, nil)
}

// sameOwner makes n workers of one owner and its first server.
func sameOwner(o *owner, n int) []*owner {
	out := make([]*owner, n)
	for i := range out {
		out[i] = &owner{user: o.user, servers: o.servers}
	}
	return out
}

// prefillFatServer publishes, straight to the stream, a server and n
// credentials under it, and returns its owner and the stream's last sequence.
func prefillFatServer(ctx context.Context, natsURL string, n int) (*owner, uint64, error) {
	nc, err := eventstore.Connect(natsURL, "vaultbench-prefill")
	if err != nil {
		return nil, 0, err
	}
	defer nc.Close()
	st, err := eventstore.Open(ctx, nc, eventstore.Config{Stream: "VAULT"})
	if err != nil {
		return nil, 0, err
	}
	fx, msgs := buildFixtures("fat", 1, n)
	last, err := publishAll(ctx, st, msgs)
	if err != nil {
		return nil, 0, err
	}
	return &owner{user: fx[0].Owner.User, servers: []string{fx[0].ServerID}}, last, nil
}

// createClosed runs createCredential at a fixed concurrency, worker w as
// owner w; rotate makes each owner cycle over its servers instead of always
// writing to its first one.
func createClosed(ctx context.Context, base string, owners []*owner, rotate bool, warm, dur time.Duration) loadgen.Result {
	return loadgen.Closed(ctx, loadgen.ClosedConfig{Concurrency: len(owners), Warmup: warm, Duration: dur},
		func(ctx context.Context, w int) error {
			o := owners[w]
			s := o.servers[0]
			if rotate {
				s = o.servers[o.next.Add(1)%uint64(len(o.servers))]
			}
			return createOn(ctx, base, o, s, w)
		})
}

// createOpen offers createCredential at a fixed rate, request k going to
// owner k mod n and, within it, to its servers in turn.
func createOpen(ctx context.Context, base string, owners []*owner, rate float64, warm, dur time.Duration) loadgen.Result {
	return loadgen.Open(ctx, loadgen.OpenConfig{Rate: rate, Warmup: warm, Duration: dur, Workers: 128},
		func(ctx context.Context, k int) error {
			o := owners[k%len(owners)]
			s := o.servers[o.next.Add(1)%uint64(len(o.servers))]
			return createOn(ctx, base, o, s, k)
		})
}

// storedSizes reads the size of the newest event and the newest wrapped data
// key the API stored, so the raw baseline publishes the same sizes.
func storedSizes(ctx context.Context, natsURL string) (event, key int, err error) {
	nc, err := eventstore.Connect(natsURL, "vaultbench-sizes")
	if err != nil {
		return 0, 0, err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return 0, 0, err
	}
	for i, name := range []string{"VAULT", "VAULT_KEYS"} {
		s, err := js.Stream(ctx, name)
		if err != nil {
			return 0, 0, err
		}
		info, err := s.Info(ctx)
		if err != nil {
			return 0, 0, err
		}
		m, err := s.GetMsg(ctx, info.State.LastSeq)
		if err != nil {
			return 0, 0, err
		}
		if i == 0 {
			event = len(m.Data)
		} else {
			key = len(m.Data)
		}
	}
	return event, key, nil
}
