package main

import (
	"testing"

	"github.com/mcpvault/vault/bench/loadgen"
)

func TestMedianRound(t *testing.T) {
	round := func(p99 float64) openRound { return openRound{res: loadgen.Result{P99Ms: p99}, waits: "w"} }
	for _, c := range []struct {
		p99s []float64
		want float64
	}{{[]float64{7}, 7}, {[]float64{9, 3, 5}, 5}, {[]float64{9, 3, 5, 4}, 4}, {[]float64{2, 40, 3}, 3}} {
		var rounds []openRound
		for _, p := range c.p99s {
			rounds = append(rounds, round(p))
		}
		if got := medianRound(rounds).res.P99Ms; got != c.want {
			t.Errorf("medianRound(%v) = %v, want %v", c.p99s, got, c.want)
		}
		if rounds[0].res.P99Ms != c.p99s[0] {
			t.Errorf("medianRound reordered its argument")
		}
	}
}
