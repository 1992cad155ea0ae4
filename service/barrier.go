package service

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/mcpvault/vault/app"
	"github.com/mcpvault/vault/mcpproxy"
)

// statCounters returns a maker of counters named prefix+name+"_total" that
// read one field of the snapshot stats returns when scraped.
func statCounters[S any](prefix string, stats func() S) func(name, help string, get func(S) uint64) prometheus.Collector {
	return func(name, help string, get func(S) uint64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: prefix + name + "_total", Help: help},
			func() float64 { return float64(get(stats())) })
	}
}

// registerBarrierMetrics exposes the read barrier's counters
// (app.BarrierStats) as vault_read_barrier_*_total.
func registerBarrierMetrics(reg prometheus.Registerer, v *app.Vault) {
	counter := statCounters("vault_read_barrier_", v.BarrierStats)
	reg.MustRegister(
		counter("announcements", "Applied announcements received from the projector of this read model.",
			func(s app.BarrierStats) uint64 { return s.Announcements }),
		counter("waits", "Reads that found the read model behind the sequence they must see and waited.",
			func(s app.BarrierStats) uint64 { return s.Waits }),
		counter("woken", "Waiting reads released by the projector's applied announcement.",
			func(s app.BarrierStats) uint64 { return s.Woken }),
		counter("fallback_reads", "Times a waiting read read the read model's sequence itself (announcement late or lost).",
			func(s app.BarrierStats) uint64 { return s.FallbackReads }),
		counter("behind", "Waits that ended in 503 read_model_behind.",
			func(s app.BarrierStats) uint64 { return s.Behind }),
		counter("unrelated", "Reads of a server tree that found the read model behind only by events of other trees, and did not wait.",
			func(s app.BarrierStats) uint64 { return s.Unrelated }),
	)
}

// registerProxyMetrics counts the MCP endpoint's tools/call by the path
// that served them: "relay" (the raw JSON-RPC fast path) or "sdk".
func registerProxyMetrics(reg prometheus.Registerer, p *mcpproxy.Proxy) {
	for _, path := range []string{"relay", "sdk"} {
		reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "vault_mcp_tool_calls_total",
			Help:        "tools/call requests of the MCP endpoint by the path that served them (relay: raw JSON-RPC fast path; sdk: through the go-sdk).",
			ConstLabels: prometheus.Labels{"path": path}},
			func() float64 {
				relayed, sdk := p.ToolCalls()
				if path == "relay" {
					return float64(relayed)
				}
				return float64(sdk)
			}))
	}
}

// registerKeyPoolMetrics exports the data-key pool's counters (app/keypool.go).
func registerKeyPoolMetrics(reg prometheus.Registerer, v *app.Vault) {
	counter := statCounters("vault_key_pool_", v.KeyPoolStats)
	reg.MustRegister(
		counter("hits", "Credential creates that took a data key stored ahead (no key publish on their path).",
			func(s app.KeyPoolStats) uint64 { return s.Hits }),
		counter("misses", "Credential creates that stored their data key inline.",
			func(s app.KeyPoolStats) uint64 { return s.Misses }),
		counter("stored", "Data keys stored ahead into the pool.",
			func(s app.KeyPoolStats) uint64 { return s.Stored }),
		counter("destroyed", "Pooled data keys destroyed unused (expired, dropped, at shutdown).",
			func(s app.KeyPoolStats) uint64 { return s.Destroyed }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "vault_key_pool_keys", Help: "Data keys in the pool and being stored."},
			func() float64 { return float64(v.KeyPoolStats().Pooled) }),
	)
}
