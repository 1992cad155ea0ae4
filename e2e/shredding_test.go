package e2e

// Crypto-shredding (issue 3, point 4): revoking or deleting a credential, or
// deleting its server, destroys the credential's data key. The
// CredentialCreated event keeps its sealed secret in the immutable stream, but
// no key the vault holds can open it again, the wrapped key's bytes are gone
// from the JetStream store directory, and a replay still rebuilds the same
// read model.

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/mcpvault/vault/domain"
	"github.com/mcpvault/vault/events"
	"github.com/mcpvault/vault/internal/vaulttest"
	"github.com/mcpvault/vault/seal"
)

// ---- helpers (prefixed "shred" to stay clear of other files in package e2e) ----

// shredJS is a raw JetStream client on the env's NATS server, to read what
// the vault stored exactly as it is stored.
func shredJS(tb testing.TB, env *vaulttest.Env) jetstream.JetStream {
	tb.Helper()
	return vaulttest.MustJetStream(tb, env.NATSURL())
}

func shredCtx(tb testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	tb.Cleanup(cancel)
	return ctx
}

// shredKeySubject is where the wrapped data key of a credential lives.
func shredKeySubject(env *vaulttest.Env, credID string) string {
	return "vaultkeys." + strings.ToLower(env.Stream) + ".dek." + credID
}

// shredCred is one credential as the stream holds it.
type shredCred struct {
	ID, ServerID string
	Sent         domain.Secret // what the test sent
	Created      events.CredentialCreated
	Binding      seal.Binding
	Wrapped      []byte // the keys-stream message, as stored
	WK           seal.WrappedKey
	DEK          []byte
}

// shredFirstEvent reads the FIRST event on a credential's subject (after a
// revoke the last one is the revoke event) and decodes it.
func shredFirstEvent(tb testing.TB, env *vaulttest.Env, js jetstream.JetStream, serverID, credID string) (events.Record, events.CredentialCreated) {
	tb.Helper()
	ctx := shredCtx(tb)
	s, err := js.Stream(ctx, env.Stream)
	if err != nil {
		tb.Fatal(err)
	}
	m, err := s.GetMsg(ctx, 1, jetstream.WithGetMsgSubject(events.CredentialSubject(serverID, credID)))
	if err != nil {
		tb.Fatalf("first event of %s: %v", credID, err)
	}
	rec, err := events.Unmarshal(m.Data)
	if err != nil {
		tb.Fatalf("decode first event of %s: %v", credID, err)
	}
	created, ok := rec.Event.(events.CredentialCreated)
	if !ok {
		tb.Fatalf("first event of %s is %T, want CredentialCreated", credID, rec.Event)
	}
	if created.Secret == nil && created.AuthType != "none" {
		tb.Fatalf("CredentialCreated of %s has no sealed secret", credID)
	}
	return rec, created
}

// shredGetKey returns the stored wrapped data key message, or ok=false when
// the keys stream has none for the credential.
func shredGetKey(tb testing.TB, env *vaulttest.Env, js jetstream.JetStream, credID string) ([]byte, bool) {
	tb.Helper()
	ctx := shredCtx(tb)
	ks, err := js.Stream(ctx, env.Stream+"_KEYS")
	if err != nil {
		tb.Fatal(err)
	}
	m, err := ks.GetLastMsgForSubject(ctx, shredKeySubject(env, credID))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil, false
	}
	if err != nil {
		tb.Fatalf("key of %s: %v", credID, err)
	}
	return m.Data, true
}

// shredAllKeys returns every wrapped key the keys stream still holds, by subject.
func shredAllKeys(tb testing.TB, env *vaulttest.Env, js jetstream.JetStream) map[string][]byte {
	tb.Helper()
	ctx := shredCtx(tb)
	ks, err := js.Stream(ctx, env.Stream+"_KEYS")
	if err != nil {
		tb.Fatal(err)
	}
	info, err := ks.Info(ctx, jetstream.WithSubjectFilter(">"))
	if err != nil {
		tb.Fatal(err)
	}
	out := map[string][]byte{}
	for subj := range info.State.Subjects {
		m, err := ks.GetLastMsgForSubject(ctx, subj)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			tb.Fatal(err)
		}
		out[subj] = m.Data
	}
	return out
}

// shredLoad reads a live credential from the stream and proves that its
// secret decrypts, with the keys the vault holds, to what was sent.
func shredLoad(tb testing.TB, env *vaulttest.Env, js jetstream.JetStream, serverID, credID string, sent domain.Secret) *shredCred {
	tb.Helper()
	rec, created := shredFirstEvent(tb, env, js, serverID, credID)
	c := &shredCred{ID: credID, ServerID: serverID, Sent: sent, Created: created,
		Binding: seal.Binding{CredentialID: credID, ServerID: serverID, Owner: rec.Owner}}
	raw, ok := shredGetKey(tb, env, js, credID)
	if !ok {
		tb.Fatalf("no wrapped data key stored for live credential %s", credID)
	}
	c.Wrapped = raw
	if err := json.Unmarshal(raw, &c.WK); err != nil {
		tb.Fatalf("wrapped key of %s is not JSON: %v", credID, err)
	}
	if len(c.WK.Ciphertext) < 32 {
		tb.Fatalf("wrapped key of %s has a %d-byte ciphertext", credID, len(c.WK.Ciphertext))
	}
	got := shredOpen(tb, env, c, raw)
	if got == nil {
		tb.Fatalf("before shredding, the secret of %s does not decrypt", credID)
	}
	if !reflect.DeepEqual(*got, sent) {
		tb.Fatalf("secret of %s decrypts to %+v, want %+v", credID, *got, sent)
	}
	dek, err := env.Keyring.Unwrap(c.Binding, c.WK)
	if err != nil {
		tb.Fatal(err)
	}
	c.DEK = dek
	return c
}

// shredOpen tries to open c's sealed secret with the wrapped key raw; nil
// when it does not open.
func shredOpen(tb testing.TB, env *vaulttest.Env, c *shredCred, raw []byte) *domain.Secret {
	tb.Helper()
	var w seal.WrappedKey
	if json.Unmarshal(raw, &w) != nil {
		return nil
	}
	dek, err := env.Keyring.Unwrap(c.Binding, w)
	if err != nil {
		return nil
	}
	pt, err := seal.Open(dek, c.Binding, c.Created.Secret)
	if err != nil {
		return nil
	}
	var s domain.Secret
	if err := json.Unmarshal(pt, &s); err != nil {
		tb.Fatalf("opened secret of %s is not JSON: %v", c.ID, err)
	}
	return &s
}

// shredMustBeShredded proves that no key the system still holds opens the
// victim's sealed secret: its own wrapped key is gone, and every wrapped key
// left in the keys stream, unwrapped under every master key id of the
// keyring and every binding the test knows, yields no data key that opens it.
// It returns how many data keys the attempt could unwrap at all (the
// survivors'), so the caller can check the attempt was not vacuous.
func shredMustBeShredded(tb testing.TB, env *vaulttest.Env, js jetstream.JetStream, victim *shredCred, all []*shredCred) int {
	tb.Helper()
	if raw, ok := shredGetKey(tb, env, js, victim.ID); ok {
		tb.Fatalf("wrapped data key of %s is still in the keys stream: %s", victim.ID, raw)
	}
	// The immutable event is still there, with the same sealed secret.
	_, created := shredFirstEvent(tb, env, js, victim.ServerID, victim.ID)
	if !reflect.DeepEqual(created.Secret, victim.Created.Secret) {
		tb.Fatalf("the CredentialCreated event of %s changed", victim.ID)
	}
	kids := []string{env.Keyring.ActiveKID()}
	unwrapped := 0
	for subj, raw := range shredAllKeys(tb, env, js) {
		var w seal.WrappedKey
		if json.Unmarshal(raw, &w) != nil {
			tb.Fatalf("keys stream holds a non-JSON message on %s", subj)
		}
		if bytes.Equal(w.Ciphertext, victim.WK.Ciphertext) {
			tb.Fatalf("the victim's wrapped key is still stored, on %s", subj)
		}
		for _, kid := range append(slices.Clone(kids), w.KID) {
			w.KID = kid
			for _, other := range all {
				dek, err := env.Keyring.Unwrap(other.Binding, w)
				if err != nil {
					continue
				}
				unwrapped++
				if pt, err := seal.Open(dek, victim.Binding, victim.Created.Secret); err == nil {
					tb.Fatalf("the secret of shredded %s still opens with the key on %s: %q", victim.ID, subj, pt)
				}
			}
		}
	}
	return unwrapped
}

// shredNeedles are the forms in which a wrapped key or data key could sit on disk.
func shredNeedles(c *shredCred) map[string][]byte {
	return map[string][]byte{
		c.ID + " wrapped-key message":           c.Wrapped,
		c.ID + " wrapped-key ciphertext":        c.WK.Ciphertext,
		c.ID + " wrapped-key ciphertext base64": []byte(base64.StdEncoding.EncodeToString(c.WK.Ciphertext)),
		c.ID + " data key":                      c.DEK,
		c.ID + " data key base64":               []byte(base64.StdEncoding.EncodeToString(c.DEK)),
	}
}

// shredScanTree searches every regular file under root for every needle and
// returns, for each needle found, the files that contain it.
func shredScanTree(tb testing.TB, root string, needles map[string][]byte) map[string][]string {
	tb.Helper()
	found := map[string][]string{}
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if !d.Type().IsRegular() {
			return nil
		}
		data, err := os.ReadFile(path)
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		for name, n := range needles {
			if len(n) > 0 && bytes.Contains(data, n) {
				found[name] = append(found[name], rel)
			}
		}
		return nil
	})
	if err != nil {
		tb.Fatal(err)
	}
	return found
}

// shredDump is what a user can read: every server and every credential
// (revoked included) of the caller.
func shredDump(tb testing.TB, env *vaulttest.Env) string {
	tb.Helper()
	var out []string
	r := env.Do(tb, vaulttest.Request{Method: "GET", Path: "/servers?limit=100&order=asc"})
	if r.Status != http.StatusOK {
		tb.Fatalf("list servers: %d %s", r.Status, r.Body)
	}
	out = append(out, string(r.Body))
	var list struct {
		Data []struct {
			ID string `json:"id"`
		} `json:"data"`
	}
	if err := json.Unmarshal(r.Body, &list); err != nil {
		tb.Fatal(err)
	}
	for _, s := range list.Data {
		r := env.Do(tb, vaulttest.Request{Method: "GET", Path: "/servers/" + s.ID + "/credentials?limit=100&order=asc&include_revoked=true"})
		if r.Status != http.StatusOK {
			tb.Fatalf("list credentials: %d %s", r.Status, r.Body)
		}
		out = append(out, string(r.Body))
	}
	return strings.Join(out, "\n")
}

func shredMustStatus(tb testing.TB, r vaulttest.Response, want int) map[string]any {
	tb.Helper()
	if r.Status != want {
		tb.Fatalf("status %d, want %d: %s", r.Status, want, r.Body)
	}
	var m map[string]any
	if err := json.Unmarshal(r.Body, &m); err != nil {
		tb.Fatalf("body is not JSON: %s", r.Body)
	}
	return m
}

// shredListedIDs returns the credential ids a list shows.
func shredListedIDs(tb testing.TB, env *vaulttest.Env, serverID, query string) []string {
	tb.Helper()
	m := shredMustStatus(tb, env.Do(tb, vaulttest.Request{Method: "GET", Path: "/servers/" + serverID + "/credentials?limit=100" + query}), http.StatusOK)
	var ids []string
	for _, d := range m["data"].([]any) {
		ids = append(ids, d.(map[string]any)["id"].(string))
	}
	sort.Strings(ids)
	return ids
}

// ---- the test -------------------------------------------------------------

// TestShredding runs revoke, delete-credential and delete-server against a
// server with three credentials (bearer, authorization, headers) and a second
// server with one credential, and proves for each: the API shows the
// promised state; the victims' CredentialCreated events are still in the
// stream but no key the vault holds decrypts them; their wrapped keys' bytes
// are found nowhere in the JetStream store, running or stopped; the
// survivors still decrypt; and a replay into a fresh read model gives the same
// reads.
func TestShredding(t *testing.T) {
	for _, action := range []string{"revoke", "delete-credential", "delete-server"} {
		t.Run(action, func(t *testing.T) {
			env := vaulttest.MustStart(t, vaulttest.Options{})
			js := shredJS(t, env)
			tag := randomShredTag(t)

			srv := env.MustCreateServer(t, "", nil)
			other := env.MustCreateServer(t, "", map[string]any{"name": "Other", "server_label": "other", "server_url": "https://mcp.example.com/mcp"})
			secrets := []domain.Secret{
				{BearerToken: "shred-bearer-" + tag},
				{Authorization: "Basic shred-auth-" + tag},
				{Headers: map[string]string{"X-Api-Key": "shred-header-" + tag, "X-Tenant": "t-" + tag}},
			}
			bodies := []map[string]any{
				{"name": "bearer", "bearer_token": secrets[0].BearerToken},
				{"name": "authorization", "authorization": secrets[1].Authorization},
				{"name": "headers", "headers": secrets[2].Headers},
			}
			var all, victims, survivors []*shredCred
			for i, b := range bodies {
				id := env.MustCreateCredential(t, "", srv, b)["id"].(string)
				all = append(all, shredLoad(t, env, js, srv, id, secrets[i]))
			}
			otherSecret := domain.Secret{BearerToken: "shred-other-" + tag}
			otherID := env.MustCreateCredential(t, "", other, map[string]any{"bearer_token": otherSecret.BearerToken})["id"].(string)
			all = append(all, shredLoad(t, env, js, other, otherID, otherSecret))
			if action == "delete-server" {
				victims, survivors = all[:3], all[3:]
			} else {
				victims, survivors = all[:1], all[1:]
			}

			// Non-vacuous: the store directory holds every wrapped key before
			// the shredding (file store writes are flushed shortly after).
			needles := map[string][]byte{}
			for _, c := range all {
				for k, v := range shredNeedles(c) {
					needles[k] = v
				}
			}
			vaulttest.Eventually(t, 10*time.Second, func() bool {
				found := shredScanTree(t, env.StoreDir, needles)
				for _, c := range all {
					if len(found[c.ID+" wrapped-key ciphertext base64"]) == 0 {
						return false
					}
				}
				return true
			})

			// The action, and what the API shows afterwards.
			victim := victims[0]
			credPath := "/servers/" + srv + "/credentials/" + victim.ID
			var revokedAt string
			switch action {
			case "revoke":
				m := shredMustStatus(t, env.Do(t, vaulttest.Request{Method: "POST", Path: credPath + "/revoke"}), http.StatusOK)
				revokedAt, _ = m["revoked_at"].(string)
				if revokedAt == "" {
					t.Fatalf("revoke answered without revoked_at: %v", m)
				}
				again := shredMustStatus(t, env.Do(t, vaulttest.Request{Method: "POST", Path: credPath + "/revoke"}), http.StatusOK)
				if !reflect.DeepEqual(again, m) {
					t.Fatalf("second revoke answered %v, first %v", again, m)
				}
				got := shredMustStatus(t, env.Do(t, vaulttest.Request{Method: "GET", Path: credPath}), http.StatusOK)
				if got["revoked_at"] != revokedAt {
					t.Fatalf("get after revoke: revoked_at %v, want %s", got["revoked_at"], revokedAt)
				}
				if ids := shredListedIDs(t, env, srv, ""); !slices.Contains(ids, victim.ID) {
					t.Fatalf("revoked credential not listed: %v", ids)
				}
				if ids := shredListedIDs(t, env, srv, "&include_revoked=false"); slices.Contains(ids, victim.ID) {
					t.Fatalf("revoked credential listed with include_revoked=false: %v", ids)
				}
				// The vault itself refuses to use it.
				tr := shredMustStatus(t, env.Do(t, vaulttest.Request{Method: "POST", Path: "/servers/" + srv + "/test",
					Body: map[string]any{"credential_id": victim.ID}}), http.StatusOK)
				if tr["connected"] != false {
					t.Fatalf("testServer with a revoked credential: %v", tr)
				}
			case "delete-credential":
				m := shredMustStatus(t, env.Do(t, vaulttest.Request{Method: "DELETE", Path: credPath}), http.StatusOK)
				if m["deleted"] != true || m["id"] != victim.ID || m["object"] != "mcp.credential.deleted" {
					t.Fatalf("delete answered %v", m)
				}
				shredMustStatus(t, env.Do(t, vaulttest.Request{Method: "GET", Path: credPath}), http.StatusNotFound)
				shredMustStatus(t, env.Do(t, vaulttest.Request{Method: "POST", Path: credPath + "/revoke"}), http.StatusNotFound)
				shredMustStatus(t, env.Do(t, vaulttest.Request{Method: "DELETE", Path: credPath}), http.StatusNotFound)
				if ids := shredListedIDs(t, env, srv, ""); slices.Contains(ids, victim.ID) || len(ids) != 2 {
					t.Fatalf("list after delete: %v", ids)
				}
			case "delete-server":
				m := shredMustStatus(t, env.Do(t, vaulttest.Request{Method: "DELETE", Path: "/servers/" + srv}), http.StatusOK)
				if m["deleted"] != true || m["id"] != srv || m["object"] != "mcp.server.deleted" {
					t.Fatalf("delete answered %v", m)
				}
				shredMustStatus(t, env.Do(t, vaulttest.Request{Method: "GET", Path: "/servers/" + srv}), http.StatusNotFound)
				shredMustStatus(t, env.Do(t, vaulttest.Request{Method: "GET", Path: "/servers/" + srv + "/credentials"}), http.StatusNotFound)
				for _, v := range victims {
					shredMustStatus(t, env.Do(t, vaulttest.Request{Method: "GET", Path: "/servers/" + srv + "/credentials/" + v.ID}), http.StatusNotFound)
				}
				ls := shredMustStatus(t, env.Do(t, vaulttest.Request{Method: "GET", Path: "/servers"}), http.StatusOK)
				for _, d := range ls["data"].([]any) {
					if d.(map[string]any)["id"] == srv {
						t.Fatalf("deleted server still listed")
					}
				}
				// The API does not enumerate a server's credentials (that
				// would not be O(1)); the projector's cascade destroys the
				// data key of every credential under the server once it has
				// applied the deletion.
				deadline := time.Now().Add(10 * time.Second)
				for _, v := range victims {
					for {
						if _, ok := shredGetKey(t, env, js, v.ID); !ok {
							break
						}
						if time.Now().After(deadline) {
							t.Fatalf("the projector did not destroy the data key of %s", v.ID)
						}
						time.Sleep(20 * time.Millisecond)
					}
				}
			}

			// Crypto-shredding, read from the raw stream.
			checkShredded := func(when string) {
				t.Helper()
				for _, v := range victims {
					if n := shredMustBeShredded(t, env, js, v, all); n == 0 {
						t.Fatalf("%s: no surviving wrapped key could be unwrapped at all: the check is vacuous", when)
					}
				}
				for _, s := range survivors {
					raw, ok := shredGetKey(t, env, js, s.ID)
					if !ok {
						t.Fatalf("%s: the data key of untouched credential %s was destroyed", when, s.ID)
					}
					if got := shredOpen(t, env, s, raw); got == nil || !reflect.DeepEqual(*got, s.Sent) {
						t.Fatalf("%s: untouched credential %s no longer decrypts", when, s.ID)
					}
				}
			}
			checkShredded("after " + action)

			// The bytes are gone from disk, while NATS runs and after it stops;
			// the survivors' bytes are still found (the search works).
			checkDisk := func(when string) {
				t.Helper()
				found := shredScanTree(t, env.StoreDir, needles)
				for _, v := range victims {
					for name := range shredNeedles(v) {
						if files := found[name]; len(files) > 0 {
							t.Errorf("%s: %s found on disk in %v", when, name, files)
						}
					}
				}
				for _, s := range survivors {
					if len(found[s.ID+" wrapped-key ciphertext base64"]) == 0 {
						t.Errorf("%s: survivor %s's wrapped key not found on disk: the search is broken", when, s.ID)
					}
				}
				for _, c := range all {
					for _, form := range []string{" data key", " data key base64"} {
						if files := found[c.ID+form]; len(files) > 0 {
							t.Errorf("%s: %s%s (an unwrapped data key) found on disk in %v", when, c.ID, form, files)
						}
					}
				}
				if t.Failed() {
					t.FailNow()
				}
			}
			checkDisk("NATS running")

			before := shredDump(t, env)
			if action == "revoke" && !strings.Contains(before, revokedAt) {
				t.Fatalf("dump does not show revoked_at %s", revokedAt)
			}
			env.StopAPI()
			env.StopProjector()
			env.StopNATS()
			checkDisk("NATS stopped")

			// Replay: a fresh read model from the stream gives the same reads.
			env.StartNATS()
			for _, suffix := range []string{"", "-wal", "-shm"} {
				if err := os.Remove(env.ReadModel + suffix); err != nil && !errors.Is(err, fs.ErrNotExist) {
					t.Fatal(err)
				}
			}
			env.StartProjector()
			env.StartAPI()
			var after string
			vaulttest.Eventually(t, 20*time.Second, func() bool {
				after = shredDump(t, env)
				return after == before
			})
			if after != before {
				t.Fatalf("replayed read model differs:\nbefore %s\nafter  %s", before, after)
			}
			switch action {
			case "revoke":
				got := shredMustStatus(t, env.Do(t, vaulttest.Request{Method: "GET", Path: credPath}), http.StatusOK)
				if got["revoked_at"] != revokedAt {
					t.Fatalf("after replay revoked_at is %v, want %s", got["revoked_at"], revokedAt)
				}
			case "delete-credential":
				shredMustStatus(t, env.Do(t, vaulttest.Request{Method: "GET", Path: credPath}), http.StatusNotFound)
			case "delete-server":
				shredMustStatus(t, env.Do(t, vaulttest.Request{Method: "GET", Path: "/servers/" + srv}), http.StatusNotFound)
			}
			js = shredJS(t, env)
			checkShredded("after replay")

			// API and projector both destroy the key (the projector again on
			// replay); whoever comes second must find it gone, not fail.
			for _, line := range strings.Split(env.Logs.String(), "\n") {
				if strings.Contains(line, "destroying data key failed") {
					t.Errorf("spurious shredding failure logged: %s", line)
				}
			}
		})
	}
}

// randomShredTag is 32 random hex characters.
func randomShredTag(tb testing.TB) string {
	tb.Helper()
	return hygRandomHex(tb)
}
