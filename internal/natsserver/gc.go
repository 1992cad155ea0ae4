package natsserver

import "github.com/mcpvault/vault/internal/gogc"

// GCPercent is the garbage collector's target (GOGC) of a process that holds
// the vault's NATS server, unless GOGC is set. Its live heap is mostly the
// stream's subject index — a server, a credential and its uses each have
// their own subject — which is pointer-dense and grows with the credentials
// stored (42 MB and 720,000 objects for 100,000 credentials), while the
// garbage per request is small. At Go's default (100) the collector marks
// that whole index each time as much garbage has been made: under read load
// every ~1.3 s, for 40–120 ms on two cores, and the stream requests answered
// meanwhile make the reads' tail (docs/benchmarks.md, "Run of 2026-11-30
// 18:30 UTC"). At 400 it marks a quarter as often, for a heap of up to five
// times the live one; GOGC and GOMEMLIMIT still decide when set.
const GCPercent = 400

// TuneGC sets GCPercent unless the environment sets GOGC. Call it in the
// process that starts the server, not in processes that only connect.
func TuneGC() { gogc.SetDefault(GCPercent) }
