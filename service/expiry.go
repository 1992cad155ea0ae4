package service

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/mcpvault/vault/app"
	"github.com/mcpvault/vault/eventstore"
)

// Expiry appends mcp.credential.expiring_soon and mcp.credential.expired
// events (see app.RecordExpiry). Every API replica runs one; a JetStream
// key-value lease lets only one of them work at a time, and another takes
// over within LeaseTTL when the holder stops. What was recorded lives in the
// stream (and, through the projector, in the read model), so a restarted
// scheduler picks up exactly where the stream stands.
type Expiry struct {
	Vault  *app.Vault
	Log    *slog.Logger
	Holder string // this replica's name in the lease
	// Lead is how long before expires_at expiring_soon is recorded (default 72 h).
	Lead time.Duration
	// Interval between scans (default 30 s).
	Interval time.Duration
	// LeaseTTL is how long a stopped holder keeps the lease (default 15 s).
	LeaseTTL time.Duration
	// Horizon bounds how far back expired credentials are looked for
	// (default 30 days): a scheduler stopped for longer misses older ones.
	Horizon time.Duration
	Now     func() time.Time
}

func (x *Expiry) defaults() {
	if x.Lead == 0 {
		x.Lead = 72 * time.Hour
	}
	if x.Interval == 0 {
		x.Interval = 30 * time.Second
	}
	if x.LeaseTTL == 0 {
		x.LeaseTTL = 15 * time.Second
	}
	if x.Horizon == 0 {
		x.Horizon = 30 * 24 * time.Hour
	}
	if x.Now == nil {
		x.Now = time.Now
	}
}

// Run schedules until ctx ends.
func (x *Expiry) Run(ctx context.Context) error {
	x.defaults()
	tick := min(x.Interval, x.LeaseTTL/3)
	var lease *eventstore.Lease
	defer func() {
		if lease != nil {
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
			lease.Release(rctx)
			cancel()
		}
	}()
	lastScan := time.Time{}
	for {
		if st := x.Vault.Store(); st != nil {
			if lease == nil {
				l, err := st.AcquireLease(ctx, "expiry-scheduler", x.Holder, x.LeaseTTL)
				if err == nil {
					lease = l
					x.Log.Info("expiry scheduler: this replica holds the lease", "holder", x.Holder)
				} else if !errors.Is(err, eventstore.ErrLeaseHeld) && ctx.Err() == nil {
					x.Log.Warn("expiry scheduler: lease unavailable", "err", err)
				}
			} else if err := lease.Renew(ctx); err != nil {
				x.Log.Warn("expiry scheduler: lease lost", "err", err)
				lease = nil
			}
			if lease != nil && time.Since(lastScan) >= x.Interval {
				lastScan = time.Now()
				if n, err := x.scan(ctx, lease); err != nil && ctx.Err() == nil {
					x.Log.Warn("expiry scan failed; retrying next interval", "err", err)
				} else if n > 0 {
					x.Log.Info("expiry notices recorded", "events", n)
				}
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(tick):
		}
	}
}

// scan records every notice due, in batches, renewing the lease between them.
func (x *Expiry) scan(ctx context.Context, lease *eventstore.Lease) (int, error) {
	total := 0
	for {
		now := x.Now()
		due, err := x.Vault.DB.ExpiryDue(ctx, now, x.Lead, x.Horizon, 200)
		if err != nil {
			return total, err
		}
		n := 0
		for _, e := range due {
			k, err := x.Vault.RecordExpiry(ctx, e, now, x.Lead)
			if err != nil {
				return total, err
			}
			n += k
		}
		total += n
		// Stop when nothing new was appended: what is left is recorded in the
		// stream but not applied yet (the next scan sees it applied).
		if len(due) < 200 || n == 0 {
			return total, nil
		}
		if err := lease.Renew(ctx); err != nil {
			return total, err
		}
	}
}
