package audit_test

import (
	"errors"
	"fmt"
	"maps"
	"testing"

	"github.com/mcpvault/vault/audit"
)

// VerifyAll answers, message by message, what VerifySignature answers:
// in batches (all valid, or with forgeries of every kind mixed in) and
// below the batch size.
func TestVerifyAllAgreesWithVerifySignature(t *testing.T) {
	kr, err := audit.ParseKeyring(audit.NewKeySpec("k2") + "," + audit.NewKeySpec("k1"))
	if err != nil {
		t.Fatal(err)
	}
	other, err := audit.ParseKeyring(audit.NewKeySpec("k1")) // the same kid, another key
	if err != nil {
		t.Fatal(err)
	}
	signed := func(i int) audit.Signed {
		subject := fmt.Sprintf("vault.mcp_srv_%02d.credential.mcp_cred_%04d", i%7, i)
		body := []byte(fmt.Sprintf(`{"id":"evt-%d","type":"mcp.credential.created","data":{}}`, i))
		return audit.Signed{Subject: subject, Body: body, Header: audit.MapHeader(kr.Sign(subject, body, audit.FirstLink))}
	}
	// withHeader returns m with header k set to what set makes of its value.
	withHeader := func(k string, set func(string) string) func(audit.Signed) audit.Signed {
		return func(m audit.Signed) audit.Signed {
			h := maps.Clone(m.Header.(audit.MapHeader))
			h[k] = set(h[k])
			m.Header = h
			return m
		}
	}
	forge := map[string]func(audit.Signed) audit.Signed{
		"unsigned":    func(m audit.Signed) audit.Signed { m.Header = audit.MapHeader{}; return m },
		"unknown key": withHeader(audit.HeaderKID, func(string) string { return "k9" }),
		"signed by another key of the same id": func(m audit.Signed) audit.Signed {
			m.Header = audit.MapHeader(other.Sign(m.Subject, m.Body, audit.FirstLink))
			return m
		},
		"body changed":         func(m audit.Signed) audit.Signed { m.Body = append(m.Body[:len(m.Body):len(m.Body)], ' '); return m },
		"subject changed":      func(m audit.Signed) audit.Signed { m.Subject += "x"; return m },
		"chain link added":     withHeader(audit.HeaderChain, func(string) string { return "1:00" }),
		"signature not base64": withHeader(audit.HeaderSig, func(v string) string { return "!" + v[1:] }),
		"signature cut short":  withHeader(audit.HeaderSig, func(v string) string { return v[:40] }),
	}
	check := func(name string, msgs []audit.Signed, wantBad int) {
		t.Helper()
		errs := kr.VerifyAll(msgs)
		if len(errs) != len(msgs) {
			t.Fatalf("%s: %d answers for %d messages", name, len(errs), len(msgs))
		}
		bad := 0
		for i, m := range msgs {
			_, want := kr.VerifySignature(m.Subject, m.Body, m.Header)
			if !errors.Is(errs[i], want) || (want == nil) != (errs[i] == nil) {
				t.Fatalf("%s: message %d: VerifyAll %v, VerifySignature %v", name, i, errs[i], want)
			}
			if errs[i] != nil {
				bad++
			}
		}
		if bad != wantBad {
			t.Fatalf("%s: %d messages failed, want %d", name, bad, wantBad)
		}
	}
	for _, n := range []int{1, 7, 8, 300} {
		msgs := make([]audit.Signed, n)
		for i := range msgs {
			msgs[i] = signed(i)
		}
		check(fmt.Sprintf("%d genuine", n), msgs, 0)
		for name, f := range forge {
			for _, at := range []int{0, n / 2, n - 1} {
				mixed := append([]audit.Signed(nil), msgs...)
				mixed[at] = f(mixed[at])
				check(fmt.Sprintf("%d with %q at %d", n, name, at), mixed, 1)
			}
		}
		if n >= 8 {
			// Every kind at once.
			mixed := append([]audit.Signed(nil), msgs...)
			i := 0
			for _, f := range forge {
				mixed[i] = f(mixed[i])
				i++
			}
			check(fmt.Sprintf("%d with every forgery", n), mixed, len(forge))
		}
	}
}

// A public key that is not a point, or is the identity (small order),
// verifies nothing, in a batch or not.
func TestVerifyAllWithABadPublicKey(t *testing.T) {
	signer, _ := audit.ParseKeyring(audit.NewKeySpec("k1"))
	var msgs []audit.Signed
	for i := range 10 {
		body := []byte(fmt.Sprint(i))
		msgs = append(msgs, audit.Signed{Subject: "s", Body: body, Header: audit.MapHeader(signer.Sign("s", body, audit.FirstLink))})
	}
	for name, pub := range map[string]string{
		"not a point": "AgAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
		"identity":    "AQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
	} {
		kr, err := audit.ParsePublicKeys("k1:" + pub)
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range []int{3, 10} {
			for i, err := range kr.VerifyAll(msgs[:n]) {
				if !errors.Is(err, audit.ErrSignature) {
					t.Fatalf("%s, %d messages: message %d: %v", name, n, i, err)
				}
			}
		}
	}
}
