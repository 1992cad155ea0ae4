package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/mcpvault/vault/audit"
	"github.com/mcpvault/vault/events"
	"github.com/mcpvault/vault/internal/vaulttest"
	"github.com/mcpvault/vault/seal"
)

func mustKeyring(t *testing.T, spec string) *seal.Keyring {
	t.Helper()
	k, err := seal.ParseKeyring(spec)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// vaultEnv starts a whole vault whose master keyring is spec and points
// vaultctl's environment at it.
func vaultEnv(t *testing.T, spec string) *vaulttest.Env {
	t.Helper()
	env := vaulttest.MustStart(t, vaulttest.Options{})
	env.StopAPI()
	env.Keyring = mustKeyring(t, spec)
	env.StartAPI()
	for k, v := range map[string]string{"VAULT_NATS_URL": env.NATSURL(), "VAULT_DATA_DIR": env.Dir, "VAULT_STREAM": env.Stream,
		"VAULT_READMODEL_PATH": env.ReadModel, "VAULT_MASTER_KEYS": spec, "VAULT_AUDIT_KEYS": env.AuditSpec,
		"VAULT_AUDIT_PUBLIC_KEYS": ""} {
		t.Setenv(k, v)
	}
	return env
}

// sentCred is a credential the test created, with the token it sent.
type sentCred struct {
	server, id, token string
	owner             events.Owner
}

func createCred(t *testing.T, env *vaulttest.Env, user, server, token string) (sentCred, bool) {
	r := env.Do(t, vaulttest.Request{Method: "POST", Path: "/servers/" + server + "/credentials", User: user,
		Body: map[string]any{"bearer_token": token}})
	if r.Status != http.StatusCreated {
		return sentCred{}, false
	}
	return sentCred{server: server, id: r.JSON(t)["id"].(string), token: token, owner: events.Owner{Account: "acct_a", User: user}}, true
}

// openSecret decrypts a credential's secret from what is stored (the
// created event, its data key, its owner key) with kr alone.
func openSecret(t *testing.T, js jetstream.JetStream, stream string, kr *seal.Keyring, c sentCred) (string, error) {
	t.Helper()
	ctx := context.Background()
	es, _ := js.Stream(ctx, stream)
	m, err := es.GetMsg(ctx, 1, jetstream.WithGetMsgSubject(events.CredentialSubject(c.server, c.id)))
	if err != nil {
		return "", err
	}
	rec, err := events.Unmarshal(m.Data)
	if err != nil {
		return "", err
	}
	created := rec.Event.(events.CredentialCreated)
	ks, _ := js.Stream(ctx, stream+"_KEYS")
	dm, err := ks.GetLastMsgForSubject(ctx, "vaultkeys."+strings.ToLower(stream)+".dek."+c.id)
	if err != nil {
		return "", err
	}
	var w seal.WrappedKey
	if err := json.Unmarshal(dm.Data, &w); err != nil {
		return "", err
	}
	b := seal.Binding{CredentialID: c.id, ServerID: c.server, Owner: c.owner}
	if created.Secret.DEKWrappedBy != w.KID {
		return "", fmt.Errorf("dek_wrapped_by %q, data key wrapped by %q", created.Secret.DEKWrappedBy, w.KID)
	}
	om, err := ks.GetLastMsgForSubject(ctx, "vaultkeys."+strings.ToLower(stream)+".owner."+seal.OwnerKeyID(c.owner))
	if err != nil {
		return "", err
	}
	okey, err := kr.OpenOwnerKey(c.owner, om.Data)
	if err != nil {
		return "", err
	}
	dek, err := seal.UnwrapUnder(okey, b, w)
	if err != nil {
		return "", err
	}
	pt, err := seal.Open(dek, b, created.Secret)
	if err != nil {
		return "", err
	}
	var s struct {
		BearerToken string `json:"bearer_token"`
	}
	err = json.Unmarshal(pt, &s)
	return s.BearerToken, err
}

// TestKeysRotateUnderCreateLoad: owners and credentials exist under master
// key "old"; the operator prepends "new" and runs keys rotate while
// credentials keep being created; a second run changes nothing; then "old"
// is removed and every secret, old and new, still decrypts — while no
// stored key opens with "old" alone any more.
func TestKeysRotateUnderCreateLoad(t *testing.T) {
	oldSpec, newSpec := seal.NewKeySpec("old"), seal.NewKeySpec("new")
	env := vaultEnv(t, oldSpec)
	var (
		mu    sync.Mutex
		creds []sentCred
	)
	servers := map[string]string{}
	const owners = 40
	for i := 0; i < owners; i++ {
		user := fmt.Sprintf("user-%d", i)
		servers[user] = env.MustCreateServer(t, user, nil)
		c, ok := createCred(t, env, user, servers[user], fmt.Sprintf("token-before-%d-abcdefgh", i))
		if !ok {
			t.Fatal("create before rotation failed")
		}
		creds = append(creds, c)
	}

	// The operator prepends the new key and restarts the API.
	t.Setenv("VAULT_MASTER_KEYS", newSpec+","+oldSpec)
	env.StopAPI()
	env.Keyring = mustKeyring(t, newSpec+","+oldSpec)
	env.StartAPI()

	stop := make(chan struct{})
	var wg sync.WaitGroup
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				default:
				}
				user := fmt.Sprintf("user-%d", (g*7+n)%owners)
				if c, ok := createCred(t, env, user, servers[user], fmt.Sprintf("token-during-%d-%d-abcdefgh", g, n)); ok {
					mu.Lock()
					creds = append(creds, c)
					mu.Unlock()
				}
			}
		}()
	}
	time.Sleep(100 * time.Millisecond)
	code, out, errs := vaultctl(t, "--json", "keys", "rotate")
	time.Sleep(100 * time.Millisecond)
	close(stop)
	wg.Wait()
	if code != 0 {
		t.Fatalf("rotate: %d %s %s", code, out, errs)
	}
	var res rotation
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatal(err)
	}
	if res.OwnerKeys != owners || res.MasterKID != "new" || len(res.RetiredKIDs) != 1 || res.RetiredKIDs[0] != "old" {
		t.Fatalf("rotation %+v", res)
	}
	mu.Lock()
	during := len(creds) - owners
	mu.Unlock()
	if during < 10 {
		t.Fatalf("only %d credentials created during the rotation", during)
	}
	// Idempotent: a second run re-wraps nothing.
	code, out, _ = vaultctl(t, "--json", "keys", "rotate")
	var again rotation
	if err := json.Unmarshal([]byte(out), &again); code != 0 || err != nil || again.OwnerKeys != 0 || again.DataKeys != 0 || again.AlreadyCurrent < owners {
		t.Fatalf("second rotation: %d %s", code, out)
	}

	// The old key is removed everywhere; everything still decrypts.
	env.StopAPI()
	env.Keyring = mustKeyring(t, newSpec)
	env.StartAPI()
	js := vaulttest.MustJetStream(t, env.NATSURL())
	onlyNew, onlyOld := mustKeyring(t, newSpec), mustKeyring(t, oldSpec)
	for _, c := range creds {
		got, err := openSecret(t, js, env.Stream, onlyNew, c)
		if err != nil || got != c.token {
			t.Fatalf("%s after rotation: %q %v", c.id, got, err)
		}
		if _, err := openSecret(t, js, env.Stream, onlyOld, c); err == nil {
			t.Fatalf("%s still opens with the old key alone", c.id)
		}
	}
	// The rotation is recorded, with key ids only, signed.
	es, _ := js.Stream(context.Background(), env.Stream)
	m, err := es.GetLastMsgForSubject(context.Background(), events.KeysSubject)
	if err != nil {
		t.Fatal(err)
	}
	rec, err := events.Unmarshal(m.Data)
	if err != nil {
		t.Fatal(err)
	}
	if e, ok := rec.Event.(events.KeysRewrapped); !ok || e.MasterKID != "new" || m.Header.Get(audit.HeaderSig) == "" {
		t.Fatalf("rotation event %s", m.Data)
	}
	if strings.Contains(string(m.Data), strings.SplitN(newSpec, ":", 2)[1]) || strings.Contains(string(m.Data), strings.SplitN(oldSpec, ":", 2)[1]) {
		t.Fatal("the rotation event carries key material")
	}
}

// TestKeysRotateResumes: a rotation interrupted between storing a key's
// re-wrapped version and destroying the old one leaves two versions on the
// subject; the next run destroys the old version and finds the key current.
func TestKeysRotateResumes(t *testing.T) {
	oldSpec, newSpec := seal.NewKeySpec("old"), seal.NewKeySpec("new")
	env := vaultEnv(t, oldSpec)
	srv := env.MustCreateServer(t, "erin", nil)
	c, ok := createCred(t, env, "erin", srv, "token-erin-abcdefgh")
	if !ok {
		t.Fatal("create failed")
	}
	// The interrupted run: the new version is stored, the old one is not destroyed.
	js := vaulttest.MustJetStream(t, env.NATSURL())
	ks, _ := js.Stream(context.Background(), env.Stream+"_KEYS")
	subject := "vaultkeys." + strings.ToLower(env.Stream) + ".owner." + seal.OwnerKeyID(c.owner)
	old, err := ks.GetLastMsgForSubject(context.Background(), subject)
	if err != nil {
		t.Fatal(err)
	}
	rotated := mustKeyring(t, newSpec+","+oldSpec)
	next, changed, err := rotated.RewrapOwnerKey(old.Data)
	if err != nil || !changed {
		t.Fatal(err)
	}
	if _, err := js.Publish(context.Background(), subject, next); err != nil {
		t.Fatal(err)
	}
	t.Setenv("VAULT_MASTER_KEYS", newSpec+","+oldSpec)
	code, out, errs := vaultctl(t, "--json", "keys", "rotate")
	var res rotation
	if code != 0 || json.Unmarshal([]byte(out), &res) != nil || res.Cleaned != 1 || res.OwnerKeys != 0 || len(res.RetiredKIDs) != 1 {
		t.Fatalf("resumed rotation: %d %s %s", code, out, errs)
	}
	if _, err := ks.GetMsg(context.Background(), old.Sequence); err == nil {
		t.Fatal("the old version is still stored")
	}
	if got, err := openSecret(t, js, env.Stream, mustKeyring(t, newSpec), c); err != nil || got != c.token {
		t.Fatalf("after the resumed rotation: %q %v", got, err)
	}
}
