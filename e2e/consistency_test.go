package e2e

import (
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mcpvault/vault/internal/vaulttest"
)

// A read sent after a write's answer sees the write, although the read
// model is built by the projector, not by the API: 1,000 create-then-get
// and 1,000 create-then-list rounds (half on servers, half on credentials)
// with no miss. Each worker is its own end user, so the newest item of its
// desc list must be the one it just created.
func TestReadYourWrites1000Rounds(t *testing.T) {
	env := vaulttest.MustStart(t, vaulttest.Options{})
	const workers, rounds = 4, 1000
	var misses, rws atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			user := fmt.Sprintf("ryw-%d", w)
			home := env.MustCreateServer(t, user, nil)
			miss := func(format string, args ...any) {
				if misses.Add(1) <= 10 {
					t.Errorf(user+": "+format, args...)
				}
			}
			for i := w; i < rounds; i += workers {
				// Even rounds read with a get, odd rounds with a list; the
				// read is always the next request after the create.
				name := fmt.Sprintf("srv-%d", i)
				c := env.Do(t, vaulttest.Request{Method: "POST", Path: "/servers", User: user,
					Body: map[string]any{"name": name, "server_label": "l", "server_url": "https://example.com/mcp"}})
				if c.Status != http.StatusCreated {
					t.Errorf("create server: %d %s", c.Status, c.Body)
					return
				}
				sid := c.JSON(t)["id"].(string)
				if i%2 == 0 {
					if g := env.Do(t, vaulttest.Request{Method: "GET", Path: "/servers/" + sid, User: user}); g.Status != http.StatusOK || g.JSON(t)["name"] != name {
						miss("round %d: get server after create: %d %s", i, g.Status, g.Body)
					}
				} else if ids := lcListAs(t, env, user, "/servers?order=desc&limit=5"); len(ids) == 0 || ids[0] != sid {
					miss("round %d: server list after create starts %v, want %s", i, ids, sid)
				}
				cc := env.Do(t, vaulttest.Request{Method: "POST", Path: "/servers/" + home + "/credentials", User: user,
					Body: map[string]any{"name": name, "auth_type": "none"}})
				if cc.Status != http.StatusCreated {
					t.Errorf("create credential: %d %s", cc.Status, cc.Body)
					return
				}
				cid := cc.JSON(t)["id"].(string)
				if i%2 == 1 {
					if g := env.Do(t, vaulttest.Request{Method: "GET", Path: "/servers/" + home + "/credentials/" + cid, User: user}); g.Status != http.StatusOK || g.JSON(t)["name"] != name {
						miss("round %d: get credential after create: %d %s", i, g.Status, g.Body)
					}
				} else if ids := lcListAs(t, env, user, "/servers/"+home+"/credentials?order=desc&limit=5"); len(ids) == 0 || ids[0] != cid {
					miss("round %d: credential list after create starts %v, want %s", i, ids, cid)
				}
				rws.Add(2)
			}
		}()
	}
	wg.Wait()
	el := time.Since(start)
	t.Logf("read-your-writes: %d create-then-get and %d create-then-list rounds (half servers, half credentials) by %d workers in %s: %d misses",
		rws.Load()/2, rws.Load()/2, workers, el.Round(time.Millisecond), misses.Load())
	if misses.Load() > 0 {
		t.Fatalf("%d reads missed the write before them", misses.Load())
	}
	if rws.Load() != 2*rounds {
		t.Fatalf("only %d of %d rounds ran", rws.Load(), 2*rounds)
	}
}

// lcListAs returns the ids of one list page read as user.
func lcListAs(tb testing.TB, env *vaulttest.Env, user, path string) []string {
	tb.Helper()
	r := env.Do(tb, vaulttest.Request{Method: "GET", Path: path, User: user})
	if r.Status != http.StatusOK {
		tb.Errorf("GET %s: %d %s", path, r.Status, r.Body)
		return nil
	}
	var ids []string
	for _, d := range r.JSON(tb)["data"].([]any) {
		ids = append(ids, d.(map[string]any)["id"].(string))
	}
	return ids
}
