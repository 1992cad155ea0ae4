package e2e

import (
	"fmt"
	"net/http"
	"slices"
	"testing"

	"github.com/mcpvault/vault/internal/vaulttest"
)

// pagWalkAfter walks base with limit and `after` from the start and returns
// every page; it checks has_more on each page.
func pagWalkAfter(tb testing.TB, env *vaulttest.Env, w apiWho, base string, limit int, order string) []apiPage {
	tb.Helper()
	var pages []apiPage
	cursor := ""
	for i := 0; ; i++ {
		if i > 1000 {
			tb.Fatal("the walk does not end")
		}
		q := fmt.Sprintf("%s?limit=%d&order=%s", base, limit, order)
		if cursor != "" {
			q += "&after=" + cursor
		}
		p := apiMustList(tb, env, w, q)
		pages = append(pages, p)
		if !p.HasMore {
			return pages
		}
		if len(p.IDs) == 0 {
			tb.Fatalf("%s: has_more with an empty page", q)
		}
		cursor = p.IDs[len(p.IDs)-1]
	}
}

// pagWalkBefore walks base backwards with `before`, starting from the page
// before cursor, until has_more is false; it returns the pages in the order
// they were fetched (last page first).
func pagWalkBefore(tb testing.TB, env *vaulttest.Env, w apiWho, base string, limit int, order, cursor string) []apiPage {
	tb.Helper()
	var pages []apiPage
	for i := 0; ; i++ {
		if i > 1000 {
			tb.Fatal("the walk does not end")
		}
		q := fmt.Sprintf("%s?limit=%d&order=%s&before=%s", base, limit, order, cursor)
		p := apiMustList(tb, env, w, q)
		pages = append(pages, p)
		if !p.HasMore {
			return pages
		}
		if len(p.IDs) == 0 {
			tb.Fatalf("%s: has_more with an empty page", q)
		}
		cursor = p.IDs[0]
	}
}

// pagCheckWalk checks that pages hold want exactly once, in order, in pages
// of limit items, and that has_more is true on every page but the last.
func pagCheckWalk(tb testing.TB, what string, pages []apiPage, want []string, limit int) {
	tb.Helper()
	var got []string
	for i, p := range pages {
		got = append(got, p.IDs...)
		last := i == len(pages)-1
		if p.HasMore == last {
			tb.Errorf("%s: page %d of %d has has_more=%v", what, i+1, len(pages), p.HasMore)
		}
		if !last && len(p.IDs) != limit {
			tb.Errorf("%s: page %d holds %d items, want %d", what, i+1, len(p.IDs), limit)
		}
	}
	if !slices.Equal(got, want) {
		tb.Errorf("%s: walked\n%v\nwant\n%v", what, got, want)
	}
	wantPages := (len(want) + limit - 1) / limit
	if wantPages == 0 {
		wantPages = 1
	}
	if len(pages) != wantPages {
		tb.Errorf("%s: %d pages, want %d", what, len(pages), wantPages)
	}
}

// pagCheckAll walks a list in every way and checks it holds asc (oldest
// first) exactly.
func pagCheckAll(t *testing.T, env *vaulttest.Env, w apiWho, base string, asc []string, limit int) {
	t.Helper()
	desc := slices.Clone(asc)
	slices.Reverse(desc)
	for _, o := range []struct {
		order string
		want  []string
	}{{"asc", asc}, {"desc", desc}} {
		fwd := pagWalkAfter(t, env, w, base, limit, o.order)
		pagCheckWalk(t, base+" "+o.order+" after", fwd, o.want, limit)

		// Backwards with before, from the end of the forward walk: the last
		// page's first item is the cursor, then each page's first item.
		last := fwd[len(fwd)-1]
		var back []apiPage
		if len(last.IDs) > 0 && len(fwd) > 1 {
			back = pagWalkBefore(t, env, w, base, limit, o.order, last.IDs[0])
		}
		var got []string
		for i := len(back) - 1; i >= 0; i-- {
			got = append(got, back[i].IDs...)
			if back[i].HasMore != (i != len(back)-1) {
				t.Errorf("%s %s before: page %d has has_more=%v", base, o.order, len(back)-i, back[i].HasMore)
			}
		}
		got = append(got, last.IDs...)
		if !slices.Equal(got, o.want) {
			t.Errorf("%s %s before: walked\n%v\nwant\n%v", base, o.order, got, o.want)
		}
		for _, p := range back[:max(0, len(back)-1)] {
			if len(p.IDs) != limit {
				t.Errorf("%s %s before: a page not at the start holds %d items", base, o.order, len(p.IDs))
			}
		}
	}
}

func TestPaginationServers(t *testing.T) {
	env := vaulttest.MustStart(t, vaulttest.Options{})
	w := apiWho{User: "pager"}
	const n, limit = 25, 7
	var asc []string
	for i := 0; i < n; i++ {
		id := apiMustCreateServer(t, env, w, map[string]any{"name": fmt.Sprint("s", i), "server_label": "l", "server_url": "https://e.example"})["id"].(string)
		if len(asc) > 0 && id <= asc[len(asc)-1] {
			t.Fatalf("ids must sort by creation: %s after %s", id, asc[len(asc)-1])
		}
		asc = append(asc, id)
	}
	// Someone else's servers never show up.
	apiMustCreateServer(t, env, apiCallerA, nil)
	apiMustCreateServer(t, env, apiWho{Key: vaulttest.KeyB, User: "pager"}, nil)

	pagCheckAll(t, env, w, "/servers", asc, limit)
	pagCheckAll(t, env, w, "/servers", asc, 5) // pages that end exactly at the end
	pagCheckAll(t, env, w, "/servers", asc, 100)
	pagCheckAll(t, env, w, "/servers", asc, 1)

	// Defaults: newest first, 20 items.
	p := apiMustList(t, env, w, "/servers")
	desc := slices.Clone(asc)
	slices.Reverse(desc)
	if !slices.Equal(p.IDs, desc[:20]) || !p.HasMore {
		t.Errorf("default page: %v more=%v", p.IDs, p.HasMore)
	}
	p = apiMustList(t, env, w, "/servers?order=asc")
	if !slices.Equal(p.IDs, asc[:20]) || !p.HasMore {
		t.Errorf("default asc page: %v more=%v", p.IDs, p.HasMore)
	}

	// has_more is exact at the boundaries.
	exact := []struct {
		q    string
		want []string
		more bool
	}{
		{"?order=asc&limit=7&after=" + asc[17], asc[18:25], false}, // exactly the last 7
		{"?order=asc&limit=7&after=" + asc[16], asc[17:24], true},
		{"?order=asc&limit=7&after=" + asc[24], nil, false},      // nothing after the last
		{"?order=asc&limit=7&before=" + asc[7], asc[0:7], false}, // exactly the first 7
		{"?order=asc&limit=7&before=" + asc[8], asc[1:8], true},
		{"?order=asc&limit=7&before=" + asc[3], asc[0:3], false},
		{"?order=asc&limit=7&before=" + asc[0], nil, false}, // nothing before the first
		{"?order=desc&limit=7&after=" + asc[7], pagRev(asc[0:7]), false},
		{"?order=desc&limit=7&after=" + asc[0], nil, false},
		{"?order=desc&limit=7&before=" + asc[17], pagRev(asc[18:25]), false},
		{"?order=desc&limit=7&before=" + asc[16], pagRev(asc[17:24]), true},
		{"?order=desc&limit=7&before=" + asc[24], nil, false},
		{"?limit=25", desc, false},
		{"?limit=24", desc[:24], true},
	}
	for _, c := range exact {
		p := apiMustList(t, env, w, "/servers"+c.q)
		if !slices.Equal(p.IDs, c.want) || p.HasMore != c.more {
			t.Errorf("%s: %v more=%v, want %v more=%v", c.q, p.IDs, p.HasMore, c.want, c.more)
		}
	}

	// A cursor whose item was deleted still works as a position.
	apiMustOK(t, env, w, "DELETE", "/servers/"+asc[10], nil, http.StatusOK)
	p = apiMustList(t, env, w, "/servers?order=asc&limit=3&after="+asc[10])
	if !slices.Equal(p.IDs, asc[11:14]) || !p.HasMore {
		t.Errorf("after a deleted id: %v", p.IDs)
	}
	rest := slices.Delete(slices.Clone(asc), 10, 11)
	pagCheckAll(t, env, w, "/servers", rest, limit)

	// An owner with nothing: an empty page with null first_id/last_id.
	for _, q := range []string{"", "?order=asc", "?after=" + asc[3], "?before=" + asc[3], "?limit=1"} {
		p := apiMustList(t, env, apiWho{User: "nobody"}, "/servers"+q)
		if len(p.IDs) != 0 || p.HasMore || p.FirstID != nil || p.LastID != nil {
			t.Errorf("empty list %q: %+v", q, p)
		}
	}
}

func pagRev(s []string) []string {
	out := slices.Clone(s)
	slices.Reverse(out)
	return out
}

func TestPaginationCredentials(t *testing.T) {
	env := vaulttest.MustStart(t, vaulttest.Options{})
	w := apiCallerA
	sid := apiMustCreateServer(t, env, w, nil)["id"].(string)
	other := apiMustCreateServer(t, env, w, nil)["id"].(string)
	base := "/servers/" + sid + "/credentials"

	// An empty credential list.
	p := apiMustList(t, env, w, base)
	if len(p.IDs) != 0 || p.HasMore || p.FirstID != nil || p.LastID != nil {
		t.Errorf("empty credentials list: %+v", p)
	}

	const n, limit = 25, 7
	var asc []string
	for i := 0; i < n; i++ {
		id := apiMustCreateCredential(t, env, w, sid, map[string]any{"name": fmt.Sprint("c", i), "bearer_token": fmt.Sprint("token-", i)})["id"].(string)
		asc = append(asc, id)
		if i%4 == 0 { // credentials of another server never show up
			apiMustCreateCredential(t, env, w, other, map[string]any{"bearer_token": "x"})
		}
	}
	if !slices.IsSorted(asc) {
		t.Fatalf("credential ids do not sort by creation: %v", asc)
	}
	pagCheckAll(t, env, w, base, asc, limit)
	t.Run("include_revoked", func(t *testing.T) {
		// Revoke every third; include_revoked=false hides them in every walk.
		var live []string
		for i, id := range asc {
			if i%3 == 0 {
				apiMustOK(t, env, w, "POST", base+"/"+id+"/revoke", nil, http.StatusOK)
			} else {
				live = append(live, id)
			}
		}
		// Delete two: gone from both views.
		for _, i := range []int{4, 5} {
			apiMustOK(t, env, w, "DELETE", base+"/"+asc[i], nil, http.StatusOK)
		}
		all := slices.DeleteFunc(slices.Clone(asc), func(id string) bool { return id == asc[4] || id == asc[5] })
		live = slices.DeleteFunc(live, func(id string) bool { return id == asc[4] || id == asc[5] })

		pagCheckAllQ(t, env, w, base, "include_revoked=false", live, limit)
		pagCheckAllQ(t, env, w, base, "include_revoked=true", all, limit)
		pagCheckAll(t, env, w, base, all, limit) // default: include revoked

		for _, it := range apiMustList(t, env, w, base+"?limit=100&include_revoked=false").Items {
			if it["revoked_at"] != nil {
				t.Errorf("include_revoked=false lists a revoked credential: %v", it["id"])
			}
		}
		// has_more with include_revoked=false counts only live items: the
		// newest items are revoked (24 % 3 == 0), yet the count is exact.
		p := apiMustList(t, env, w, base+"?include_revoked=false&order=asc&limit="+fmt.Sprint(len(live)))
		if !slices.Equal(p.IDs, live) || p.HasMore {
			t.Errorf("whole live list in one page: %v more=%v", p.IDs, p.HasMore)
		}
		p = apiMustList(t, env, w, base+"?include_revoked=false&order=asc&after="+live[len(live)-1])
		if len(p.IDs) != 0 || p.HasMore {
			t.Errorf("after the newest live credential: %v more=%v (only revoked ones follow)", p.IDs, p.HasMore)
		}
	})
}

// pagCheckAllQ is pagCheckAll with an extra query parameter.
func pagCheckAllQ(t *testing.T, env *vaulttest.Env, w apiWho, base, extra string, asc []string, limit int) {
	t.Helper()
	desc := pagRev(asc)
	for _, o := range []struct {
		order string
		want  []string
	}{{"asc", asc}, {"desc", desc}} {
		var pages []apiPage
		cursor := ""
		for i := 0; i < 100; i++ {
			q := fmt.Sprintf("%s?limit=%d&order=%s&%s", base, limit, o.order, extra)
			if cursor != "" {
				q += "&after=" + cursor
			}
			p := apiMustList(t, env, w, q)
			pages = append(pages, p)
			if !p.HasMore || len(p.IDs) == 0 {
				break
			}
			cursor = p.IDs[len(p.IDs)-1]
		}
		pagCheckWalk(t, base+" "+extra+" "+o.order+" after", pages, o.want, limit)

		// Backwards from the end with before.
		var got []string
		cursor = ""
		if len(o.want) > 0 {
			cursor = o.want[len(o.want)-1]
			got = []string{cursor}
		}
		for i := 0; cursor != "" && i < 100; i++ {
			p := apiMustList(t, env, w, fmt.Sprintf("%s?limit=%d&order=%s&%s&before=%s", base, limit, o.order, extra, cursor))
			got = append(slices.Clone(p.IDs), got...)
			if !p.HasMore {
				break
			}
			cursor = p.IDs[0]
		}
		if !slices.Equal(got, o.want) {
			t.Errorf("%s %s %s before: walked\n%v\nwant\n%v", base, extra, o.order, got, o.want)
		}
	}
}
