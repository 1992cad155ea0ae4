package service

import (
	"context"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mcpvault/vault/projections"
)

// projectorCollector exports what the read model says about the projector's
// pending work, read at each scrape, so every process sharing the read model
// file (the API serves /metrics) reports the same figures.
type projectorCollector struct {
	db      *projections.DB
	held    *prometheus.Desc
	pending *prometheus.Desc
	applied *prometheus.Desc
}

func newProjectorCollector(db *projections.DB) *projectorCollector {
	return &projectorCollector{db: db,
		held: prometheus.NewDesc("vault_projector_held_aggregates",
			"Server trees the projector holds because this build cannot apply one of their events.", nil, nil),
		pending: prometheus.NewDesc("vault_projector_pending_key_destructions",
			"Data keys of revoked or deleted credentials not destroyed yet (retried until they are).", nil, nil),
		applied: prometheus.NewDesc("vault_projector_applied_sequence",
			"Stream sequence of the last event the read model has applied (or holds).", nil, nil),
	}
}

// Describe implements prometheus.Collector.
func (c *projectorCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.held
	ch <- c.pending
	ch <- c.applied
}

// Collect implements prometheus.Collector.
func (c *projectorCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	s, err := c.db.Status(ctx)
	if err != nil {
		ch <- prometheus.NewInvalidMetric(c.held, err)
		return
	}
	ch <- prometheus.MustNewConstMetric(c.held, prometheus.GaugeValue, float64(len(s.Holds)))
	ch <- prometheus.MustNewConstMetric(c.pending, prometheus.GaugeValue, float64(s.PendingShreds))
	ch <- prometheus.MustNewConstMetric(c.applied, prometheus.GaugeValue, float64(s.LastSeq))
}

// projectorDetail is the /readyz part about the projector's pending work.
// None of it makes the process unready: a held server answers 503 on its
// own, every other one is served, and pending destructions are retried.
type projectorDetail struct {
	Held          []projections.Hold `json:"held,omitempty"`
	PendingShreds int                `json:"pending_key_destructions,omitempty"`
}

// projectorReasons reads the detail and says it in words.
func projectorReasons(ctx context.Context, db *projections.DB) (projectorDetail, []string) {
	s, err := db.Status(ctx)
	if err != nil {
		return projectorDetail{}, []string{"projector status unreadable"}
	}
	d := projectorDetail{Held: s.Holds, PendingShreds: s.PendingShreds}
	var reasons []string
	for _, h := range s.Holds {
		reasons = append(reasons, fmt.Sprintf("server %s held at sequence %d: this build cannot apply %s version %d (%d events kept)",
			h.ServerID, h.Seq, h.EventType, h.Version, h.Pending))
	}
	if s.PendingShreds > 0 {
		reasons = append(reasons, fmt.Sprintf("%d data keys of revoked or deleted credentials not destroyed yet; retrying", s.PendingShreds))
	}
	return d, reasons
}
