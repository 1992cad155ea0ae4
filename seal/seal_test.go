package seal_test

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"strings"
	"testing"

	"github.com/mcpvault/vault/events"
	"github.com/mcpvault/vault/seal"
)

var binding = seal.Binding{
	CredentialID: "mcp_cred_0196a1b2c3d4e5f60718293a4b5c6d7f",
	ServerID:     "mcp_srv_0196a1b2c3d4e5f60718293a4b5c6d7e",
	Owner:        events.Owner{Account: "acct_a", User: "user-42"},
}

// keyB64 returns the base64 text of a deterministic 32-byte key.
func keyB64(fill byte) string {
	return base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{fill}, seal.KeySize))
}

func mustKeyring(tb testing.TB, spec string) *seal.Keyring {
	tb.Helper()
	kr, err := seal.ParseKeyring(spec)
	if err != nil {
		tb.Fatalf("ParseKeyring: %v", err)
	}
	return kr
}

// mustSeal creates a data key for b, wraps it, and seals plaintext under it.
func mustSeal(tb testing.TB, kr *seal.Keyring, b seal.Binding, plaintext string) (seal.WrappedKey, *events.Sealed) {
	tb.Helper()
	dek, w, err := kr.NewDataKey(b)
	if err != nil {
		tb.Fatalf("NewDataKey: %v", err)
	}
	s, err := seal.Seal(dek, b, []byte(plaintext))
	if err != nil {
		tb.Fatalf("Seal: %v", err)
	}
	return w, s
}

// open unwraps w and opens s, both for b.
func open(kr *seal.Keyring, b seal.Binding, w seal.WrappedKey, s *events.Sealed) ([]byte, error) {
	dek, err := kr.Unwrap(b, w)
	if err != nil {
		return nil, err
	}
	return seal.Open(dek, b, s)
}

func TestRoundTrip(t *testing.T) {
	kr := mustKeyring(t, "k1:"+keyB64(1))
	const secret = `{"bearer_token":"lin_api_0123456789abcdef"}`
	w, s := mustSeal(t, kr, binding, secret)
	if w.KID != "k1" {
		t.Fatalf("wrapped key kid = %q, want k1", w.KID)
	}
	if s.Alg != "AES-256-GCM" {
		t.Fatalf("alg = %q", s.Alg)
	}
	if bytes.Contains(s.Ciphertext, []byte("lin_api")) {
		t.Fatal("ciphertext contains the plaintext")
	}
	if len(w.Ciphertext) == seal.KeySize {
		t.Fatal("wrapped key is as long as the key: no authentication tag")
	}
	pt, err := open(kr, binding, w, s)
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	if string(pt) != secret {
		t.Fatalf("opened %q, want %q", pt, secret)
	}
	// The empty plaintext round-trips too.
	w, s = mustSeal(t, kr, binding, "")
	if pt, err := open(kr, binding, w, s); err != nil || len(pt) != 0 {
		t.Fatalf("empty plaintext: %q, %v", pt, err)
	}
}

func TestFreshKeysAndNonces(t *testing.T) {
	kr := mustKeyring(t, "k1:"+keyB64(1))
	dek1, w1, err := kr.NewDataKey(binding)
	if err != nil {
		t.Fatal(err)
	}
	dek2, w2, err := kr.NewDataKey(binding)
	if err != nil {
		t.Fatal(err)
	}
	if len(dek1) != seal.KeySize || bytes.Equal(dek1, dek2) {
		t.Fatal("data keys are not fresh 32-byte keys")
	}
	if bytes.Equal(w1.Nonce, w2.Nonce) || bytes.Equal(w1.Ciphertext, w2.Ciphertext) {
		t.Fatal("two wrappings share a nonce or a ciphertext")
	}
	s1, err := seal.Seal(dek1, binding, []byte("same"))
	if err != nil {
		t.Fatal(err)
	}
	s2, err := seal.Seal(dek1, binding, []byte("same"))
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(s1.Nonce, s2.Nonce) || bytes.Equal(s1.Ciphertext, s2.Ciphertext) {
		t.Fatal("two sealings of the same plaintext share a nonce or a ciphertext")
	}
}

// moved lists bindings that differ from binding in one respect each: the
// record a ciphertext could be moved to.
func moved() map[string]seal.Binding {
	m := map[string]seal.Binding{}
	b := binding
	b.CredentialID = "mcp_cred_0196a1b2c3d4e5f60718293a4b5c6d80"
	m["another credential"] = b
	b = binding
	b.ServerID = "mcp_srv_0196a1b2c3d4e5f60718293a4b5c6d99"
	m["another server"] = b
	b = binding
	b.Owner.Account = "acct_b"
	m["another account"] = b
	b = binding
	b.Owner.User = "user-43"
	m["another user"] = b
	b = binding
	b.Owner.User = ""
	m["the account without the user"] = b
	// Fields shifted across the boundary: concatenation would be equal.
	b = binding
	b.Owner = events.Owner{Account: "acct_auser-42", User: ""}
	m["account and user run together"] = b
	b = binding
	b.CredentialID, b.ServerID = binding.ServerID, binding.CredentialID
	m["credential and server swapped"] = b
	return m
}

// TestMovedCiphertextFails checks a sealed secret moved to another record
// does not open, even with the right data key.
func TestMovedCiphertextFails(t *testing.T) {
	kr := mustKeyring(t, "k1:"+keyB64(1))
	dek, _, err := kr.NewDataKey(binding)
	if err != nil {
		t.Fatal(err)
	}
	s, err := seal.Seal(dek, binding, []byte("secret"))
	if err != nil {
		t.Fatal(err)
	}
	for name, other := range moved() {
		t.Run(name, func(t *testing.T) {
			pt, err := seal.Open(dek, other, s)
			if !errors.Is(err, seal.ErrDecrypt) {
				t.Fatalf("Open on %+v = %q, %v; want ErrDecrypt", other, pt, err)
			}
		})
	}
}

// TestMovedRecordFails moves a whole record (its wrapped key and its
// ciphertext, as they are stored) under another binding.
func TestMovedRecordFails(t *testing.T) {
	kr := mustKeyring(t, "k1:"+keyB64(1))
	w, s := mustSeal(t, kr, binding, "secret")
	for name, other := range moved() {
		t.Run(name, func(t *testing.T) {
			if _, err := kr.Unwrap(other, w); !errors.Is(err, seal.ErrDecrypt) {
				t.Fatalf("Unwrap under %+v: %v, want ErrDecrypt", other, err)
			}
			if pt, err := open(kr, other, w, s); !errors.Is(err, seal.ErrDecrypt) {
				t.Fatalf("open under %+v = %q, %v; want ErrDecrypt", other, pt, err)
			}
		})
	}
}

// TestCiphertextSwappedBetweenCredentials puts credential B's ciphertext in
// credential A's record: A's key does not open it, nor does B's under A's binding.
func TestCiphertextSwappedBetweenCredentials(t *testing.T) {
	kr := mustKeyring(t, "k1:"+keyB64(1))
	other := moved()["another credential"]
	wA, _ := mustSeal(t, kr, binding, "secret of A")
	wB, sB := mustSeal(t, kr, other, "secret of B")
	if _, err := open(kr, binding, wA, sB); !errors.Is(err, seal.ErrDecrypt) {
		t.Fatalf("A's key opened B's ciphertext: %v", err)
	}
	if _, err := open(kr, binding, wB, sB); !errors.Is(err, seal.ErrDecrypt) {
		t.Fatalf("B's record opened under A's binding: %v", err)
	}
	if pt, err := open(kr, other, wB, sB); err != nil || string(pt) != "secret of B" {
		t.Fatalf("B's own record: %q, %v", pt, err)
	}
}

func TestTamperingFails(t *testing.T) {
	kr := mustKeyring(t, "k1:"+keyB64(1))
	w, s := mustSeal(t, kr, binding, "a secret long enough to tamper with")
	flip := func(b []byte, i int) []byte {
		c := bytes.Clone(b)
		c[i] ^= 0x01
		return c
	}
	sealedCases := map[string]*events.Sealed{
		"ciphertext first byte": {Alg: s.Alg, Nonce: s.Nonce, Ciphertext: flip(s.Ciphertext, 0)},
		"ciphertext tag byte":   {Alg: s.Alg, Nonce: s.Nonce, Ciphertext: flip(s.Ciphertext, len(s.Ciphertext)-1)},
		"ciphertext truncated":  {Alg: s.Alg, Nonce: s.Nonce, Ciphertext: s.Ciphertext[:len(s.Ciphertext)-1]},
		"ciphertext extended":   {Alg: s.Alg, Nonce: s.Nonce, Ciphertext: append(bytes.Clone(s.Ciphertext), 0)},
		"ciphertext empty":      {Alg: s.Alg, Nonce: s.Nonce},
		"nonce flipped":         {Alg: s.Alg, Nonce: flip(s.Nonce, 0), Ciphertext: s.Ciphertext},
		"nonce short":           {Alg: s.Alg, Nonce: s.Nonce[:len(s.Nonce)-1], Ciphertext: s.Ciphertext},
		"nonce missing":         {Alg: s.Alg, Ciphertext: s.Ciphertext},
		"alg changed":           {Alg: "AES-128-GCM", Nonce: s.Nonce, Ciphertext: s.Ciphertext},
		"alg missing":           {Nonce: s.Nonce, Ciphertext: s.Ciphertext},
		"nil":                   nil,
	}
	for name, bad := range sealedCases {
		t.Run(name, func(t *testing.T) {
			if pt, err := open(kr, binding, w, bad); !errors.Is(err, seal.ErrDecrypt) {
				t.Fatalf("tampered sealed secret opened: %q, %v", pt, err)
			}
		})
	}
	wrappedCases := map[string]seal.WrappedKey{
		"wrapped ciphertext flipped": {KID: w.KID, Nonce: w.Nonce, Ciphertext: flip(w.Ciphertext, 3)},
		"wrapped nonce flipped":      {KID: w.KID, Nonce: flip(w.Nonce, 0), Ciphertext: w.Ciphertext},
		"wrapped nonce short":        {KID: w.KID, Nonce: w.Nonce[:4], Ciphertext: w.Ciphertext},
		"wrapped truncated":          {KID: w.KID, Nonce: w.Nonce, Ciphertext: w.Ciphertext[:len(w.Ciphertext)-1]},
		"unknown kid":                {KID: "k9", Nonce: w.Nonce, Ciphertext: w.Ciphertext},
		"empty kid":                  {Nonce: w.Nonce, Ciphertext: w.Ciphertext},
	}
	for name, bad := range wrappedCases {
		t.Run(name, func(t *testing.T) {
			if dek, err := kr.Unwrap(binding, bad); !errors.Is(err, seal.ErrDecrypt) {
				t.Fatalf("tampered wrapped key unwrapped: %x, %v", dek, err)
			}
		})
	}
	// The untampered pair still opens: the cases above failed for their edit.
	if pt, err := open(kr, binding, w, s); err != nil || string(pt) != "a secret long enough to tamper with" {
		t.Fatalf("original: %q, %v", pt, err)
	}
}

func TestWrongKeys(t *testing.T) {
	kr := mustKeyring(t, "k1:"+keyB64(1))
	w, s := mustSeal(t, kr, binding, "secret")
	// Another keyring with the same kid but another key.
	impostor := mustKeyring(t, "k1:"+keyB64(2))
	if _, err := impostor.Unwrap(binding, w); !errors.Is(err, seal.ErrDecrypt) {
		t.Fatalf("another master key unwrapped the data key: %v", err)
	}
	// Another data key.
	dek2, _, err := kr.NewDataKey(binding)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := seal.Open(dek2, binding, s); !errors.Is(err, seal.ErrDecrypt) {
		t.Fatalf("another data key opened the secret: %v", err)
	}
	// A data key of the wrong size.
	if _, err := seal.Open([]byte("short"), binding, s); !errors.Is(err, seal.ErrDecrypt) {
		t.Fatalf("a short data key: %v, want ErrDecrypt", err)
	}
	// The wrapped data key is not the data key: it does not open the secret.
	if _, err := seal.Open(w.Ciphertext[:seal.KeySize], binding, s); !errors.Is(err, seal.ErrDecrypt) {
		t.Fatalf("the wrapped key bytes opened the secret: %v", err)
	}
}

// TestRotation: a keyring with a new first key and the old one after it
// still opens data keys wrapped by the old key, and wraps new ones with the
// new key; a keyring that dropped the old key no longer opens them.
func TestRotation(t *testing.T) {
	oldSpec := "2025-01:" + keyB64(1)
	newSpec := "2026-04:" + keyB64(2)
	before := mustKeyring(t, oldSpec)
	if before.ActiveKID() != "2025-01" {
		t.Fatalf("active kid = %q", before.ActiveKID())
	}
	wOld, sOld := mustSeal(t, before, binding, "old secret")

	after := mustKeyring(t, newSpec+", "+oldSpec)
	if after.ActiveKID() != "2026-04" {
		t.Fatalf("active kid after rotation = %q, want the first key", after.ActiveKID())
	}
	if pt, err := open(after, binding, wOld, sOld); err != nil || string(pt) != "old secret" {
		t.Fatalf("old record after rotation: %q, %v", pt, err)
	}
	wNew, sNew := mustSeal(t, after, binding, "new secret")
	if wNew.KID != "2026-04" {
		t.Fatalf("new data key wrapped by %q, want 2026-04", wNew.KID)
	}
	if pt, err := open(after, binding, wNew, sNew); err != nil || string(pt) != "new secret" {
		t.Fatalf("new record: %q, %v", pt, err)
	}
	// The old keyring knows nothing of the new key.
	if _, err := before.Unwrap(binding, wNew); !errors.Is(err, seal.ErrDecrypt) {
		t.Fatalf("old keyring unwrapped a new data key: %v", err)
	}
	// Once the old key is retired, what it wrapped no longer opens.
	retired := mustKeyring(t, newSpec)
	if _, err := retired.Unwrap(binding, wOld); !errors.Is(err, seal.ErrDecrypt) {
		t.Fatalf("keyring without the old key unwrapped an old data key: %v", err)
	}
	// A kid relabelled onto the old wrapped key does not help.
	relabelled := wOld
	relabelled.KID = "2026-04"
	if _, err := after.Unwrap(binding, relabelled); !errors.Is(err, seal.ErrDecrypt) {
		t.Fatalf("relabelled wrapped key unwrapped: %v", err)
	}
}

func TestParseKeyring(t *testing.T) {
	k1, k2 := keyB64(1), keyB64(2)
	for _, spec := range []string{
		"k1:" + k1,
		"k1:" + k1 + ",k2:" + k2,
		" k1:" + k1 + " , k2:" + k2 + " ",
		"2026-04-29.prod_A:" + k1,
		strings.Repeat("k", 32) + ":" + k1,
	} {
		kr, err := seal.ParseKeyring(spec)
		if err != nil {
			t.Errorf("ParseKeyring(%q): %v", spec, err)
			continue
		}
		if kid, _, _ := strings.Cut(strings.TrimSpace(spec), ":"); kr.ActiveKID() != kid {
			t.Errorf("ParseKeyring(%q): active kid %q, want %q", spec, kr.ActiveKID(), kid)
		}
	}
	short := base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{7}, 31))
	long := base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{7}, 33))
	aes128 := base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{7}, 16))
	urlSafe := base64.URLEncoding.EncodeToString(bytes.Repeat([]byte{0xfb}, 32)) // '-' and '_' instead of '+' and '/'
	hexKey := hex.EncodeToString(bytes.Repeat([]byte{0xab}, 32))
	secrets := []string{k1, k2, short, long, aes128, urlSafe, k1[:20], hexKey}
	for _, tc := range []struct{ name, spec string }{
		{"empty", ""},
		{"blank", "   "},
		{"key without kid", k1},
		{"empty kid", ":" + k1},
		{"kid with a space", "k 1:" + k1},
		{"empty key", "k1:"},
		{"key of 31 bytes", "k1:" + short},
		{"key of 33 bytes", "k1:" + long},
		{"AES-128 key", "k1:" + aes128},
		{"not base64", "k1:" + k1[:20] + "!!" + k1[22:]},
		{"URL-safe base64", "k1:" + urlSafe},
		{"duplicate kid", "k1:" + k1 + ",k1:" + k2},
		{"trailing comma", "k1:" + k1 + ","},
		{"empty entry", "k1:" + k1 + ",,k2:" + k2},
		{"second entry broken", "k1:" + k1 + ",k2:" + short},
		{"second entry without kid", "k1:" + k1 + "," + k2},
		{"key and kid reversed", k1 + ":k1"},
		{"key material as kid", k1 + ":" + k2},
		{"key with '=' separator", "k1=" + k1},
		{"hex key and kid reversed", hexKey + ":k1"},
		{"kid of 33 characters", strings.Repeat("k", 33) + ":" + k1},
		{"kid with a slash", "prod/1:" + k1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			kr, err := seal.ParseKeyring(tc.spec)
			if err == nil {
				t.Fatalf("ParseKeyring(%q) = keyring with active %q, want an error", tc.spec, kr.ActiveKID())
			}
			msg := err.Error()
			for _, s := range secrets {
				if strings.Contains(msg, s) {
					t.Fatalf("error message %q contains key material", msg)
				}
			}
			// Nor any long run of the key text (16 characters = 12 key bytes).
			for _, s := range []string{k1, k2} {
				for i := 0; i+16 <= len(s); i++ {
					if strings.Contains(msg, s[i:i+16]) {
						t.Fatalf("error message %q contains part of the key", msg)
					}
				}
			}
		})
	}
}

func TestNewKeySpec(t *testing.T) {
	spec := seal.NewKeySpec("dev")
	kid, b64, ok := strings.Cut(spec, ":")
	if !ok || kid != "dev" {
		t.Fatalf("spec %q has no kid dev", spec)
	}
	key, err := base64.StdEncoding.DecodeString(b64)
	if err != nil || len(key) != seal.KeySize {
		t.Fatalf("spec key: %d bytes, %v", len(key), err)
	}
	kr := mustKeyring(t, spec)
	if kr.ActiveKID() != "dev" {
		t.Fatalf("active kid %q", kr.ActiveKID())
	}
	if seal.NewKeySpec("dev") == spec {
		t.Fatal("two generated specs are equal")
	}
	w, s := mustSeal(t, kr, binding, "x")
	if pt, err := open(kr, binding, w, s); err != nil || string(pt) != "x" {
		t.Fatalf("round trip with a generated key: %q, %v", pt, err)
	}
}

func TestWipe(t *testing.T) {
	b := []byte("data key bytes")
	seal.Wipe(b)
	if !bytes.Equal(b, make([]byte, len(b))) {
		t.Fatalf("Wipe left %q", b)
	}
}
