package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"testing"

	"github.com/mcpvault/vault/events"
	"github.com/mcpvault/vault/internal/vaulttest"
)

// lcAnswer is one concurrent request's outcome.
type lcAnswer struct {
	i    int
	resp vaulttest.Response
}

// lcRace sends n requests at once (released together) and returns the answers.
func lcRace(tb testing.TB, env *vaulttest.Env, n int, req func(i int) vaulttest.Request) []lcAnswer {
	tb.Helper()
	out := make([]lcAnswer, n)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := req(i)
			<-start
			out[i] = lcAnswer{i: i, resp: env.Do(tb, r)}
		}()
	}
	close(start)
	wg.Wait()
	return out
}

// lcTally counts answers by status.
func lcTally(as []lcAnswer) map[int]int {
	m := map[int]int{}
	for _, a := range as {
		m[a.resp.Status]++
	}
	return m
}

// lcCheckStatuses fails unless every answer is ok or a 409 conflict_error.
func lcCheckStatuses(tb testing.TB, what string, as []lcAnswer, ok ...int) {
	tb.Helper()
	for _, a := range as {
		allowed := a.resp.Status == http.StatusConflict && lcErrType(tb, a.resp) == "conflict_error"
		for _, s := range ok {
			allowed = allowed || a.resp.Status == s
		}
		if !allowed {
			tb.Fatalf("%s #%d: %d %s", what, a.i, a.resp.Status, a.resp.Body)
		}
	}
}

// lcByType returns the records of type typ.
func lcByType(recs []events.Record, typ string) []events.Record {
	var out []events.Record
	for _, r := range recs {
		if r.Event.EventType() == typ {
			out = append(out, r)
		}
	}
	return out
}

// lcUpdateField is the second field update #i changes besides its name, and
// the value it sets there: a lost update (an event written from a stale
// state) then shows as a field that changed without being named.
func lcUpdateField(i int) (string, any) {
	switch i % 4 {
	case 0:
		return "server_description", fmt.Sprintf("desc-%02d", i)
	case 1:
		return "server_label", fmt.Sprintf("label-%02d", i)
	case 2:
		return "server_url", fmt.Sprintf("https://example.com/mcp/%02d", i)
	default:
		return "metadata", map[string]any{"writer": fmt.Sprintf("%02d", i)}
	}
}

// lcAttrs is the JSON form of a server's attributes, by field name.
func lcAttrs(tb testing.TB, a events.ServerAttrs) map[string]any {
	tb.Helper()
	raw, _ := json.Marshal(a)
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		tb.Fatal(err)
	}
	return m
}

// 50 concurrent updates of one server, each changing its name and one other
// field: every accepted update is in the stream exactly once, no refused one
// is, each event was decided on the state the previous one left (nothing
// changed but what the request asked for), and the read model ends on the
// last one.
func TestNoLostUpdatesServer(t *testing.T) {
	env := vaulttest.MustStart(t, vaulttest.Options{})
	sid := env.MustCreateServer(t, "", nil)
	const n = 50
	as := lcRace(t, env, n, func(i int) vaulttest.Request {
		f, v := lcUpdateField(i)
		return vaulttest.Request{Method: "POST", Path: "/servers/" + sid, Body: map[string]any{"name": fmt.Sprintf("name-%02d", i), f: v}}
	})
	lcCheckStatuses(t, "update", as, http.StatusOK)
	accepted := map[string]int{} // name → request
	for _, a := range as {
		if a.resp.Status == http.StatusOK {
			name := a.resp.JSON(t)["name"].(string)
			if name != fmt.Sprintf("name-%02d", a.i) {
				t.Fatalf("update #%d answered name %q", a.i, name)
			}
			accepted[name] = a.i
		}
	}
	recs := lcRecords(t, env, events.ServerSubject(sid))
	updates := lcByType(recs, events.TypeServerUpdated)
	st := lcTally(as)
	t.Logf("%d concurrent updates of one server: %d answered 200, %d answered 409; %d mcp.server.updated events in the stream",
		n, st[http.StatusOK], st[http.StatusConflict], len(updates))
	if len(updates) != len(accepted) || len(accepted) == 0 {
		t.Fatalf("%d events in the stream for %d accepted updates", len(updates), len(accepted))
	}
	seen := map[string]bool{}
	prev := lcAttrs(t, recs[0].Event.(events.ServerCreated).ServerAttrs)
	for k, r := range updates {
		u := r.Event.(events.ServerUpdated)
		i, ok := accepted[u.Name]
		if !ok || seen[u.Name] {
			t.Fatalf("event %d (%q) is not an accepted update, or is there twice", k, u.Name)
		}
		seen[u.Name] = true
		f, v := lcUpdateField(i)
		cur := lcAttrs(t, u.ServerAttrs)
		if want, _ := json.Marshal(v); string(want) != lcJSON(cur[f]) {
			t.Fatalf("event %d: %s = %v, update #%d set %v", k, f, cur[f], i, v)
		}
		changed := map[string]bool{}
		for _, c := range u.ChangedFields {
			changed[c] = true
		}
		for key := range cur {
			if !changed[key] && lcJSON(cur[key]) != lcJSON(prev[key]) {
				t.Fatalf("lost update: event %d (update #%d) changed %s from %v to %v without being asked (changed_fields %v)",
					k, i, key, prev[key], cur[key], u.ChangedFields)
			}
		}
		prev = cur
	}
	got := env.Do(t, vaulttest.Request{Method: "GET", Path: "/servers/" + sid})
	if got.Status != http.StatusOK || got.JSON(t)["name"] != updates[len(updates)-1].Event.(events.ServerUpdated).Name {
		t.Fatalf("final GET %d %s; last event in the stream names %q", got.Status, got.Body, updates[len(updates)-1].Event.(events.ServerUpdated).Name)
	}
	final := got.JSON(t)
	for key, v := range prev {
		if lcJSON(final[key]) != lcJSON(v) {
			t.Fatalf("final GET %s = %v, the last event says %v", key, final[key], v)
		}
	}
}

func lcJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

// Concurrent credential writes under one server (creates; then revokes,
// deletes and server updates all at once; then many revokes and deletes of
// one credential): each accepted change is in the stream exactly once and
// the reads end on exactly the accepted changes.
func TestNoLostUpdatesCredentials(t *testing.T) {
	env := vaulttest.MustStart(t, vaulttest.Options{})
	sid := env.MustCreateServer(t, "", nil)
	credPath := "/servers/" + sid + "/credentials"

	// 1. Concurrent creates.
	const n = 40
	creates := lcRace(t, env, n, func(i int) vaulttest.Request {
		return vaulttest.Request{Method: "POST", Path: credPath,
			Body: map[string]any{"name": fmt.Sprintf("cred-%02d", i), "bearer_token": fmt.Sprintf("token-%02d-0123456789", i)}}
	})
	lcCheckStatuses(t, "create", creates, http.StatusCreated)
	var created []string
	for _, a := range creates {
		if a.resp.Status == http.StatusCreated {
			created = append(created, a.resp.JSON(t)["id"].(string))
		}
	}
	createdEvents := lcByType(lcRecords(t, env, "vault."+sid+".credential.>"), events.TypeCredentialCreated)
	t.Logf("%d concurrent credential creates: %d answered 201, %d answered 409; %d mcp.credential.created events",
		n, len(created), lcTally(creates)[http.StatusConflict], len(createdEvents))
	if len(created) < 2 || len(createdEvents) != len(created) {
		t.Fatalf("%d events for %d accepted creates", len(createdEvents), len(created))
	}
	eventIDs := map[string]int{}
	for _, r := range createdEvents {
		eventIDs[r.AggregateID]++
	}
	for _, id := range created {
		if eventIDs[id] != 1 {
			t.Fatalf("credential %s: %d created events", id, eventIDs[id])
		}
	}
	listed := lcListIDs(t, env, credPath+"?limit=100")
	if len(listed) != len(created) {
		t.Fatalf("list has %d credentials, %d were accepted", len(listed), len(created))
	}

	// 2. Revokes, deletes and server updates at once, all under one server.
	pinned := created[0] // kept for step 3
	rest := created[1:]
	as := lcRace(t, env, len(rest)+10, func(i int) vaulttest.Request {
		switch {
		case i >= len(rest):
			return vaulttest.Request{Method: "POST", Path: "/servers/" + sid, Body: map[string]any{"name": fmt.Sprintf("srv-%02d", i)}}
		case i%2 == 0:
			return vaulttest.Request{Method: "POST", Path: credPath + "/" + rest[i] + "/revoke"}
		default:
			return vaulttest.Request{Method: "DELETE", Path: credPath + "/" + rest[i]}
		}
	})
	lcCheckStatuses(t, "revoke/delete/update", as, http.StatusOK)
	recs := lcRecords(t, env, "vault."+sid+".>")
	revokedEv, deletedEv := map[string]int{}, map[string]int{}
	for _, r := range lcByType(recs, events.TypeCredentialRevoked) {
		revokedEv[r.AggregateID]++
	}
	for _, r := range lcByType(recs, events.TypeCredentialDeleted) {
		deletedEv[r.AggregateID]++
	}
	updatedEv := len(lcByType(recs, events.TypeServerUpdated))
	var okRevoke, okDelete, okUpdate int
	for _, a := range as {
		ok := a.resp.Status == http.StatusOK
		switch {
		case a.i >= len(rest):
			if ok {
				okUpdate++
			}
		case a.i%2 == 0:
			want := 0
			if ok {
				okRevoke++
				want = 1
			}
			if revokedEv[rest[a.i]] != want {
				t.Fatalf("revoke of %s answered %d; %d revoked events", rest[a.i], a.resp.Status, revokedEv[rest[a.i]])
			}
			g := env.Do(t, vaulttest.Request{Method: "GET", Path: credPath + "/" + rest[a.i]})
			if g.Status != http.StatusOK || (g.JSON(t)["revoked_at"] != nil) != ok {
				t.Fatalf("after revoke answered %d: %d %s", a.resp.Status, g.Status, g.Body)
			}
		default:
			want, wantGet := 0, http.StatusOK
			if ok {
				okDelete++
				want, wantGet = 1, http.StatusNotFound
			}
			if deletedEv[rest[a.i]] != want {
				t.Fatalf("delete of %s answered %d; %d deleted events", rest[a.i], a.resp.Status, deletedEv[rest[a.i]])
			}
			if g := env.Do(t, vaulttest.Request{Method: "GET", Path: credPath + "/" + rest[a.i]}); g.Status != wantGet {
				t.Fatalf("after delete answered %d: GET %d", a.resp.Status, g.Status)
			}
		}
	}
	t.Logf("%d concurrent revokes/deletes/updates under one server: %d+%d+%d answered 200, %d answered 409; events: %d revoked, %d deleted, %d updated",
		len(as), okRevoke, okDelete, okUpdate, lcTally(as)[http.StatusConflict], len(revokedEv), len(deletedEv), updatedEv)
	if len(revokedEv) != okRevoke || len(deletedEv) != okDelete || updatedEv != okUpdate {
		t.Fatal("the events in the stream differ from the accepted changes")
	}
	if okRevoke+okDelete+okUpdate == 0 {
		t.Fatal("no change was accepted")
	}
	if len(lcListIDs(t, env, credPath+"?limit=100")) != len(created)-okDelete {
		t.Fatal("list does not match the accepted deletes")
	}

	// 3. Many revokes of one credential: at most one event, one revoked_at.
	const m = 20
	revokes := lcRace(t, env, m, func(int) vaulttest.Request {
		return vaulttest.Request{Method: "POST", Path: credPath + "/" + pinned + "/revoke"}
	})
	lcCheckStatuses(t, "revoke one", revokes, http.StatusOK)
	stamps := map[any]bool{}
	for _, a := range revokes {
		if a.resp.Status == http.StatusOK {
			stamps[a.resp.JSON(t)["revoked_at"]] = true
		}
	}
	n1 := len(lcByType(lcRecords(t, env, events.CredentialSubject(sid, pinned)), events.TypeCredentialRevoked))
	t.Logf("%d concurrent revokes of one credential: %d answered 200 (%d distinct revoked_at), %d answered 409; %d mcp.credential.revoked events",
		m, lcTally(revokes)[http.StatusOK], len(stamps), lcTally(revokes)[http.StatusConflict], n1)
	if n1 != 1 || len(stamps) != 1 || stamps[nil] {
		t.Fatalf("want one revoke event and one revoked_at, got %d events, stamps %v", n1, stamps)
	}

	// 4. Many deletes of one credential: one 200, the others 404 (it is
	// gone) or 409, exactly one event.
	deletes := lcRace(t, env, m, func(int) vaulttest.Request {
		return vaulttest.Request{Method: "DELETE", Path: credPath + "/" + pinned}
	})
	lcCheckStatuses(t, "delete one", deletes, http.StatusOK, http.StatusNotFound)
	n2 := len(lcByType(lcRecords(t, env, events.CredentialSubject(sid, pinned)), events.TypeCredentialDeleted))
	st := lcTally(deletes)
	t.Logf("%d concurrent deletes of one credential: %d answered 200, %d 404, %d 409; %d mcp.credential.deleted events",
		m, st[http.StatusOK], st[http.StatusNotFound], st[http.StatusConflict], n2)
	if st[http.StatusOK] != 1 || n2 != 1 {
		t.Fatal("want exactly one accepted delete and one event")
	}
}

// lcListIDs returns the ids of one list page.
func lcListIDs(tb testing.TB, env *vaulttest.Env, path string) []string {
	tb.Helper()
	r := env.Do(tb, vaulttest.Request{Method: "GET", Path: path})
	if r.Status != http.StatusOK {
		tb.Fatalf("GET %s: %d %s", path, r.Status, r.Body)
	}
	var ids []string
	for _, d := range r.JSON(tb)["data"].([]any) {
		ids = append(ids, d.(map[string]any)["id"].(string))
	}
	return ids
}
