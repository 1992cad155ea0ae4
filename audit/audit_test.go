package audit_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/mcpvault/vault/audit"
)

type stored struct {
	subject string
	body    []byte
	h       audit.MapHeader
}

// writer appends like the vault does: it links each state-changing event
// to the last message on its subject.
type writer struct {
	kr   *audit.Keyring
	last map[string]int // subject -> index in log
	log  []stored
}

func (w *writer) link(subject string) audit.Link {
	i, ok := w.last[subject]
	if !ok {
		return audit.FirstLink
	}
	return audit.After(uint64(i+1), w.log[i].body)
}

func (w *writer) append(subject, typ, id string) stored {
	if w.last == nil {
		w.last = map[string]int{}
	}
	body := []byte(fmt.Sprintf(`{"id":%q,"type":%q,"data":{}}`, id, typ))
	link := audit.Unchained
	if audit.Chained(typ) {
		link = w.link(subject)
	}
	s := stored{subject, body, w.kr.Sign(subject, body, link)}
	w.last[subject] = len(w.log)
	w.log = append(w.log, s)
	return s
}

func mustKeyring(t *testing.T, spec string) *audit.Keyring {
	t.Helper()
	kr, err := audit.ParseKeyring(spec)
	if err != nil {
		t.Fatal(err)
	}
	return kr
}

// check runs a Checker over log and returns the first break's sequence (0 = none).
func check(t *testing.T, kr *audit.Keyring, log []stored) (uint64, error) {
	t.Helper()
	c := &audit.Checker{Keys: kr}
	for i, s := range log {
		if err := c.Check(uint64(i+1), s.subject, s.body, s.h); err != nil {
			var b *audit.Break
			if !errors.As(err, &b) || b.Seq != uint64(i+1) {
				t.Fatalf("break %v at %d", err, i+1)
			}
			return b.Seq, b.Err
		}
	}
	return 0, nil
}

const (
	srv  = "vault.mcp_srv_1.server"
	cred = "vault.mcp_srv_1.credential.mcp_cred_1"
	used = "vault.mcp_srv_1.credential.mcp_cred_1.used"
)

func history(t *testing.T, kr *audit.Keyring) *writer {
	w := &writer{kr: kr}
	w.append(srv, "mcp.server.created", "01A")
	w.append(cred, "mcp.credential.created", "01B")
	w.append(used, "mcp.credential.used", "01C")
	w.append(srv, "mcp.server.updated", "01D")
	w.append(used, "mcp.credential.used", "01E")
	w.append(cred, "mcp.credential.revoked", "01F")
	return w
}

func TestGenuineHistoryVerifies(t *testing.T) {
	kr := mustKeyring(t, audit.NewKeySpec("a1"))
	if seq, err := check(t, kr, history(t, kr).log); seq != 0 {
		t.Fatalf("genuine history breaks at %d: %v", seq, err)
	}
	// Auditors verify with the public keys alone.
	pub, err := audit.ParsePublicKeys(kr.PublicSpec())
	if err != nil {
		t.Fatal(err)
	}
	if pub.CanSign() {
		t.Fatal("a public keyring can sign")
	}
	if seq, err := check(t, pub, history(t, kr).log); seq != 0 {
		t.Fatalf("public-key verification breaks at %d: %v", seq, err)
	}
}

func TestForgeriesBreak(t *testing.T) {
	kr := mustKeyring(t, audit.NewKeySpec("a1"))
	other := mustKeyring(t, audit.NewKeySpec("a1")) // same kid, other key
	for name, tc := range map[string]struct {
		edit func(log []stored) []stored
		seq  uint64
		want error
	}{
		"raw publish without signature": {func(l []stored) []stored {
			return append(l, stored{cred, []byte(`{"id":"01Z","type":"mcp.credential.revoked"}`), audit.MapHeader{}})
		}, 7, audit.ErrUnsigned},
		"signed by another key": {func(l []stored) []stored {
			b := []byte(`{"id":"01Z","type":"mcp.credential.deleted"}`)
			return append(l, stored{cred, b, other.Sign(cred, b, audit.After(6, l[5].body))})
		}, 7, audit.ErrSignature},
		"body altered": {func(l []stored) []stored {
			l[3].body = []byte(strings.Replace(string(l[3].body), "updated", "deleted", 1))
			return l
		}, 4, audit.ErrSignature},
		"moved to another subject": {func(l []stored) []stored {
			c := l[1]
			c.subject = "vault.mcp_srv_1.credential.mcp_cred_2"
			return append(l, c)
		}, 7, audit.ErrSignature},
		"chain header stripped": {func(l []stored) []stored {
			h := audit.MapHeader{}
			for k, v := range l[3].h {
				h[k] = v
			}
			delete(h, audit.HeaderChain)
			l[3].h = h
			return l
		}, 4, audit.ErrSignature},
		"replayed old state change": {func(l []stored) []stored { return append(l, l[1]) }, 7, audit.ErrChain},
		"replayed old use":          {func(l []stored) []stored { return append(l, l[2]) }, 7, audit.ErrReplayed},
		"reordered copy": {func(l []stored) []stored {
			// the server's two events copied in reverse order
			return append(l, l[3], l[0])
		}, 7, audit.ErrChain},
		"replayed pair": {func(l []stored) []stored {
			// the credential's creation and revoke replayed in order: the
			// copy of the revoke links to the original creation, not the copy
			l = append(l, l[1], l[5])
			c := &audit.Checker{Keys: kr}
			for i, s := range l[:7] {
				c.Check(uint64(i+1), s.subject, s.body, s.h)
			}
			if err := c.Check(8, l[7].subject, l[7].body, l[7].h); !errors.Is(err, audit.ErrChain) {
				t.Errorf("the replayed revoke after the replayed creation: %v, want a chain break", err)
			}
			return l
		}, 7, audit.ErrChain},
		"unknown key id": {func(l []stored) []stored {
			s := mustKeyring(t, audit.NewKeySpec("zz"))
			b := []byte(`{"id":"01Z","type":"mcp.server.deleted"}`)
			return append(l, stored{srv, b, s.Sign(srv, b, audit.After(4, l[3].body))})
		}, 7, audit.ErrUnknownKey},
		"state change signed without chain": {func(l []stored) []stored {
			b := []byte(`{"id":"01Z","type":"mcp.server.deleted"}`)
			return append(l, stored{srv, b, kr.Sign(srv, b, audit.Unchained)})
		}, 7, audit.ErrUnchained},
	} {
		t.Run(name, func(t *testing.T) {
			log := tc.edit(history(t, kr).log)
			seq, err := check(t, kr, log)
			if seq != tc.seq || !errors.Is(err, tc.want) {
				t.Fatalf("break at %d (%v), want at %d (%v)", seq, err, tc.seq, tc.want)
			}
		})
	}
}

// TestRotation: a new signing key prepended to the keyring signs from then
// on; events signed by the old key still verify while it stays listed.
func TestRotation(t *testing.T) {
	old := audit.NewKeySpec("a1")
	w := history(t, mustKeyring(t, old))
	rotated := mustKeyring(t, audit.NewKeySpec("a2")+","+old)
	if rotated.ActiveKID() != "a2" {
		t.Fatalf("active %q", rotated.ActiveKID())
	}
	w.kr = rotated
	s := w.append(srv, "mcp.server.deleted", "01G")
	if s.h[audit.HeaderKID] != "a2" {
		t.Fatalf("signed by %q", s.h[audit.HeaderKID])
	}
	if seq, err := check(t, rotated, w.log); seq != 0 {
		t.Fatalf("rotated keyring breaks at %d: %v", seq, err)
	}
	if seq, err := check(t, mustKeyring(t, audit.NewKeySpec("a2")), w.log); seq != 1 || !errors.Is(err, audit.ErrUnknownKey) {
		t.Fatalf("without the old key: break at %d (%v), want 1 unknown key", seq, err)
	}
}

func TestLegacyUnsigned(t *testing.T) {
	kr := mustKeyring(t, audit.NewKeySpec("a1"))
	log := []stored{{srv, []byte(`{"id":"01A","type":"mcp.server.created"}`), audit.MapHeader{}}}
	w := &writer{kr: kr, last: map[string]int{srv: 0}, log: log}
	w.append(srv, "mcp.server.updated", "01B")
	log = w.log
	c := &audit.Checker{Keys: kr, UnsignedUntil: 1}
	for i, s := range log {
		if err := c.Check(uint64(i+1), s.subject, s.body, s.h); err != nil {
			t.Fatalf("legacy stream: %v", err)
		}
	}
	// An unsigned event after the legacy range still breaks.
	if err := c.Check(3, srv, []byte(`{"id":"01C","type":"mcp.server.deleted"}`), audit.MapHeader{}); !errors.Is(err, audit.ErrUnsigned) {
		t.Fatalf("unsigned after the legacy range: %v", err)
	}
}

func TestParseErrorsHideKeys(t *testing.T) {
	secret := "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlYw=="
	for _, spec := range []string{"", "a1", secret + ":a1", "a1:" + secret + "x", "a1:AAAA", "a b:" + secret} {
		_, err := audit.ParseKeyring(spec)
		if err == nil {
			t.Fatalf("ParseKeyring(%q) accepted", spec)
		}
		if strings.Contains(err.Error(), secret) {
			t.Fatalf("error echoes key material: %v", err)
		}
	}
	spec := audit.NewKeySpec("a1")
	if _, err := audit.ParseKeyring(spec + "," + spec); err == nil {
		t.Fatal("duplicate kid accepted")
	}
}
