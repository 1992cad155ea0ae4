package main

import (
	"context"
	"fmt"
	"math"
	"net/http"
	"slices"
	"strings"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// What reads waited for, from the API's vault_read_barrier_wait_seconds
// histogram scraped around a run: how many reads asked the stream for its
// last sequence and how long that took, and how many found the read model
// behind and how long they waited for the projector.

// waitHist is one phase's cumulative histogram: bucket upper bounds (s) and
// counts, and the total count.
type waitHist struct {
	bounds []float64
	counts []uint64
	n      uint64
}

// waitSnapshot is the histogram by phase ("stream", "read_model").
type waitSnapshot map[string]waitHist

// readWaits scrapes base's /metrics; nil when the series is missing.
func readWaits(ctx context.Context, base string) waitSnapshot {
	req, err := http.NewRequestWithContext(ctx, "GET", base+"/metrics", nil)
	if err != nil {
		return nil
	}
	req.Header.Set("Authorization", "Bearer "+benchKey)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil
	}
	defer resp.Body.Close()
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		return nil
	}
	fam := fams["vault_read_barrier_wait_seconds"]
	if fam == nil {
		return nil
	}
	out := waitSnapshot{}
	for _, m := range fam.GetMetric() {
		var phase string
		for _, l := range m.GetLabel() {
			if l.GetName() == "phase" {
				phase = l.GetValue()
			}
		}
		h := m.GetHistogram()
		w := waitHist{n: h.GetSampleCount()}
		for _, b := range h.GetBucket() {
			w.bounds = append(w.bounds, b.GetUpperBound())
			w.counts = append(w.counts, b.GetCumulativeCount())
		}
		out[phase] = w
	}
	return out
}

// since is the histogram of the observations made after before.
func (w waitHist) since(before waitHist) waitHist {
	d := waitHist{bounds: w.bounds, counts: slices.Clone(w.counts), n: w.n - before.n}
	if len(before.counts) == len(w.counts) {
		for i := range d.counts {
			d.counts[i] -= before.counts[i]
		}
	}
	return d
}

// quantile is the upper bound of the bucket holding quantile q (+Inf past
// the last bucket): "at most this long".
func (w waitHist) quantile(q float64) float64 {
	want := uint64(math.Ceil(q * float64(w.n)))
	for i, c := range w.counts {
		if c >= want {
			return w.bounds[i]
		}
	}
	return math.Inf(1)
}

// describeWaits summarises the waits between two snapshots of the API's
// histogram (the share that waited is of the reads that asked the stream).
func describeWaits(before, after waitSnapshot) string {
	if before == nil || after == nil {
		return "no vault_read_barrier_wait_seconds series"
	}
	ms := func(s float64) string {
		if math.IsInf(s, 1) {
			return "> 5 s"
		}
		return fmt.Sprintf("≤ %g ms", s*1000)
	}
	var parts []string
	s := after["stream"].since(before["stream"])
	if s.n > 0 {
		parts = append(parts, fmt.Sprintf("asked the stream %d× (p50 %s, p99 %s)", s.n, ms(s.quantile(0.5)), ms(s.quantile(0.99))))
	}
	m := after["read_model"].since(before["read_model"])
	if m.n == 0 {
		parts = append(parts, "none waited for the projector")
	} else {
		share := ""
		if s.n > 0 {
			share = fmt.Sprintf(" (%.1f%%)", 100*float64(m.n)/float64(s.n))
		}
		parts = append(parts, fmt.Sprintf("%d%s waited for the projector (p50 %s, p99 %s, p99.9 %s)",
			m.n, share, ms(m.quantile(0.5)), ms(m.quantile(0.99)), ms(m.quantile(0.999))))
	}
	return strings.Join(parts, "; ")
}
