package e2e

// Erasing an end user (issue 13, point 3): POST /erase with X-On-Behalf-Of
// deletes the user's servers and credentials (404 afterwards), appends
// mcp.owner.erased with ids only, and destroys the one owner key that wraps
// all their data keys — after which no key the system holds opens their
// secrets from the raw stream, the key's bytes are gone from disk, and a
// replay rebuilds the same read model.

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/mcpvault/vault/domain"
	"github.com/mcpvault/vault/events"
	"github.com/mcpvault/vault/internal/vaulttest"
	"github.com/mcpvault/vault/seal"
)

func TestEraseEndUser(t *testing.T) {
	env := vaulttest.MustStart(t, vaulttest.Options{})
	js := shredJS(t, env)
	type made struct {
		user, srv, cred, token string
	}
	var all []made
	for _, user := range []string{"erase-me", "keep-me"} {
		for i := 0; i < 2; i++ {
			srv := env.MustCreateServer(t, user, nil)
			token := "tok-" + user + "-" + string(rune('a'+i)) + "-0123456789"
			c := env.MustCreateCredential(t, user, srv, map[string]any{"bearer_token": token})
			all = append(all, made{user, srv, c["id"].(string), token})
		}
	}
	victim := events.Owner{Account: "acct_a", User: "erase-me"}
	// Before: every secret opens from the raw stream; the owner key record is on disk.
	creds := map[string]*shredCred{}
	for _, m := range all {
		creds[m.cred] = shredLoad(t, env, js, m.srv, m.cred, domain.Secret{BearerToken: m.token})
	}
	okSubject := "vaultkeys." + strings.ToLower(env.Stream) + ".owner." + seal.OwnerKeyID(victim)
	ks, _ := js.Stream(context.Background(), env.Stream+"_KEYS")
	okMsg, err := ks.GetLastMsgForSubject(context.Background(), okSubject)
	if err != nil {
		t.Fatal(err)
	}
	var okRec seal.OwnerKeyRecord
	if err := json.Unmarshal(okMsg.Data, &okRec); err != nil {
		t.Fatal(err)
	}
	needle := map[string][]byte{"owner key ciphertext": []byte(base64.StdEncoding.EncodeToString(okRec.Wrapped.Ciphertext))}
	vaulttest.Eventually(t, 10*time.Second, func() bool { return len(shredScanTree(t, env.StoreDir, needle)) == 1 })

	// Without X-On-Behalf-Of there is no end user to erase.
	if r := env.Do(t, vaulttest.Request{Method: "POST", Path: "/erase"}); r.Status != http.StatusBadRequest {
		t.Fatalf("erase without a user: %d %s", r.Status, r.Body)
	}
	r := env.Do(t, vaulttest.Request{Method: "POST", Path: "/erase", User: "erase-me"})
	if r.Status != http.StatusOK {
		t.Fatalf("erase: %d %s", r.Status, r.Body)
	}
	body := r.JSON(t)
	if body["object"] != "mcp.owner.erased" || body["erased"] != true || len(body["deleted_server_ids"].([]any)) != 2 {
		t.Fatalf("erase answer %s", r.Body)
	}
	for _, m := range all {
		srv := env.Do(t, vaulttest.Request{Method: "GET", Path: "/servers/" + m.srv, User: m.user})
		cred := env.Do(t, vaulttest.Request{Method: "GET", Path: "/servers/" + m.srv + "/credentials/" + m.cred, User: m.user})
		if m.user == "erase-me" && (srv.Status != 404 || cred.Status != 404) {
			t.Fatalf("erased user's server %d, credential %d", srv.Status, cred.Status)
		}
		if m.user == "keep-me" && (srv.Status != 200 || cred.Status != 200) {
			t.Fatalf("other user's server %d, credential %d", srv.Status, cred.Status)
		}
	}
	if r := env.Do(t, vaulttest.Request{Method: "GET", Path: "/servers", User: "erase-me"}); len(r.JSON(t)["data"].([]any)) != 0 {
		t.Fatalf("erased user still lists %s", r.Body)
	}

	// The event: ids only, on the owner key's subject.
	recs := lcRecords(t, env, events.OwnerSubject(seal.OwnerKeyID(victim)))
	if len(recs) != 1 {
		t.Fatalf("%d owner.erased events", len(recs))
	}
	if e, ok := recs[0].Event.(events.OwnerErased); !ok || e.OwnerKeyID != seal.OwnerKeyID(victim) || recs[0].Owner != victim || len(e.ServerIDs) != 2 {
		t.Fatalf("owner.erased %+v", recs[0])
	}

	// The owner key is gone from the keys stream and from the disk; no key
	// the system holds opens the erased user's secrets from the raw stream,
	// while the other user's still open.
	if _, err := ks.GetLastMsgForSubject(context.Background(), okSubject); err == nil {
		t.Fatal("the erased owner key is still in the keys stream")
	}
	for _, m := range all {
		c := creds[m.cred]
		_, created := shredFirstEvent(t, env, js, m.srv, m.cred)
		if created.Secret == nil || created.Secret.DEKWrappedBy != "owner:"+seal.OwnerKeyID(c.Binding.Owner) {
			t.Fatalf("created event of %s: %+v", m.cred, created.Secret)
		}
		got := shredOpen(t, env, js, c, c.Wrapped) // even with the data key record kept from before
		if m.user == "erase-me" && got != nil {
			t.Fatalf("the erased user's secret %s still opens", m.cred)
		}
		if m.user == "keep-me" && (got == nil || got.BearerToken != m.token) {
			t.Fatalf("the other user's secret %s no longer opens", m.cred)
		}
	}
	vaulttest.Eventually(t, 10*time.Second, func() bool { return len(shredScanTree(t, env.StoreDir, needle)) == 0 })

	// Erasing again is harmless (and idempotent with a key); replay gives
	// the same read model.
	if r := env.Do(t, vaulttest.Request{Method: "POST", Path: "/erase", User: "erase-me"}); r.Status != 200 || r.Header.Get("X-Vault-Sequence") == "" {
		t.Fatalf("second erase: %d", r.Status)
	}
	for i := 0; i < 2; i++ {
		r := env.Do(t, vaulttest.Request{Method: "POST", Path: "/erase", User: "erase-me", Header: map[string]string{"Idempotency-Key": "erase-1"}})
		if r.Status != 200 || (i == 1) != (r.Header.Get("Idempotent-Replayed") == "true") {
			t.Fatalf("erase with Idempotency-Key, attempt %d: %d %v", i+1, r.Status, r.Header)
		}
	}
	lcWaitCaughtUp(t, env, env.ReadModel)
	before := lcDump(t, env.ReadModel)
	env.StopProjector()
	for _, p := range []string{env.ReadModel, env.ReadModel + "-wal", env.ReadModel + "-shm"} {
		os.Remove(p)
	}
	env.StartProjector()
	lcWaitCaughtUp(t, env, env.ReadModel)
	lcSameText(t, "read model after replay", before, lcDump(t, env.ReadModel))
}
