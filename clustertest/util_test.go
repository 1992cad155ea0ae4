//go:build cluster

package clustertest

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/mcpvault/vault/internal/cluster"
)

func fmtAny(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

// appliedSeq is the read model's applied sequence once it has caught up
// with the stream (polled through /readyz).
func appliedSeq(t *testing.T, r *cluster.Replica) uint64 {
	t.Helper()
	var body struct {
		Stream struct {
			StreamSeq uint64 `json:"stream_seq"`
		} `json:"stream"`
		ReadModel struct {
			AppliedSeq uint64 `json:"applied_seq"`
		} `json:"read_model"`
	}
	eventually(t, 30*time.Second, r.Name+" caught up", func() bool {
		resp, err := client.Get(r.URL + "/readyz")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		if json.NewDecoder(resp.Body).Decode(&body) != nil || resp.StatusCode != 200 {
			return false
		}
		return body.ReadModel.AppliedSeq >= body.Stream.StreamSeq
	})
	return body.ReadModel.AppliedSeq
}
