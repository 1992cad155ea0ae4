package seal_test

import (
	"bytes"
	"errors"
	"testing"

	"github.com/mcpvault/vault/events"
	"github.com/mcpvault/vault/seal"
)

func kr(tb testing.TB, spec string) *seal.Keyring {
	tb.Helper()
	k, err := seal.ParseKeyring(spec)
	if err != nil {
		tb.Fatal(err)
	}
	return k
}

// TestOwnerKeyHierarchy: master → owner → data key → secret, and a master
// key rotation that re-wraps the owner key leaves every secret readable
// with the new master key alone.
func TestOwnerKeyHierarchy(t *testing.T) {
	old := seal.NewKeySpec("m1")
	k1 := kr(t, old)
	alice := events.Owner{Account: "acct_a", User: "alice"}
	okey, rec, err := k1.NewOwnerKey(alice)
	if err != nil {
		t.Fatal(err)
	}
	b := seal.Binding{CredentialID: "mcp_cred_1", ServerID: "mcp_srv_1", Owner: alice}
	dek, w, err := seal.NewDataKeyUnder(okey, b)
	if err != nil {
		t.Fatal(err)
	}
	if w.KID != "owner:"+seal.OwnerKeyID(alice) {
		t.Fatalf("data key KID %q", w.KID)
	}
	sealed, err := seal.Seal(dek, b, []byte("the secret"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := k1.Unwrap(b, w); !errors.Is(err, seal.ErrNeedsOwnerKey) {
		t.Fatalf("Unwrap of an owner-wrapped key: %v", err)
	}
	open := func(k *seal.Keyring, rec []byte) ([]byte, error) {
		ok, err := k.OpenOwnerKey(alice, rec)
		if err != nil {
			return nil, err
		}
		d, err := seal.UnwrapUnder(ok, b, w)
		if err != nil {
			return nil, err
		}
		return seal.Open(d, b, sealed)
	}
	if pt, err := open(k1, rec); err != nil || string(pt) != "the secret" {
		t.Fatalf("open: %q %v", pt, err)
	}
	// The owner key is bound to its owner and the data key to its record.
	if _, err := k1.OpenOwnerKey(events.Owner{Account: "acct_a", User: "bob"}, rec); err == nil {
		t.Fatal("alice's owner key opened for bob")
	}
	other := b
	other.CredentialID = "mcp_cred_2"
	if _, err := seal.UnwrapUnder(okey, other, w); err == nil {
		t.Fatal("data key opened for another credential")
	}
	// Rotation: prepend m2, re-wrap (idempotent), drop m1.
	newSpec := seal.NewKeySpec("m2")
	k2 := kr(t, newSpec+","+old)
	if k2.ActiveKID() != "m2" || k2.KIDs()[0] != "m2" || len(k2.KIDs()) != 2 {
		t.Fatalf("rotated keyring: active %q, kids %v", k2.ActiveKID(), k2.KIDs())
	}
	rec2, changed, err := k2.RewrapOwnerKey(rec)
	if err != nil || !changed {
		t.Fatalf("rewrap: changed=%v %v", changed, err)
	}
	if again, changed, err := k2.RewrapOwnerKey(rec2); err != nil || changed || !bytes.Equal(again, rec2) {
		t.Fatalf("second rewrap: changed=%v %v", changed, err)
	}
	onlyNew := kr(t, newSpec)
	if pt, err := open(onlyNew, rec2); err != nil || string(pt) != "the secret" {
		t.Fatalf("after rotation with the new key only: %q %v", pt, err)
	}
	if _, err := open(onlyNew, rec); err == nil {
		t.Fatal("the record wrapped by the removed key opened")
	}
	// A data key wrapped directly by a master key (before owner keys) is
	// re-wrapped; one under an owner key is left alone.
	legacyDEK, lw, err := k1.NewDataKey(b)
	if err != nil {
		t.Fatal(err)
	}
	nw, changed, err := k2.RewrapDataKey(b, lw)
	if err != nil || !changed || nw.KID != "m2" {
		t.Fatalf("legacy rewrap: %+v %v %v", nw, changed, err)
	}
	if d, err := onlyNew.Unwrap(b, nw); err != nil || !bytes.Equal(d, legacyDEK) {
		t.Fatalf("legacy data key after rotation: %v", err)
	}
	if _, changed, _ := k2.RewrapDataKey(b, w); changed {
		t.Fatal("an owner-wrapped data key was re-wrapped by the master key")
	}
}
