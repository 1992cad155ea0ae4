package upstream

import (
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/http/httpguts"

	"github.com/mcpvault/vault/domain"
	"github.com/mcpvault/vault/events"
)

// FuzzHeaderRules: a headers credential the API stores is one the upstream
// client can send (else every testServer with it fails), it is a valid HTTP
// header, and it is none of the headers the HTTP stack or MCP transport own.
func FuzzHeaderRules(f *testing.F) {
	for _, s := range [][2]string{{"X-Api-Key", "k"}, {"Content-Type", "x"}, {"mcp-session-id", "s"}, {"Proxy-X", "v"},
		{"X-A", "a\tb"}, {"X-A", "a\r\nb"}, {"X A", "v"}, {"Host", "evil"}, {"Last-Event-Id", "1"}, {"X-É", "v"}, {"X-A", "\x7f"}} {
		f.Add(s[0], s[1])
	}
	srv := domain.Server{ID: "mcp_srv_0194f3a2b1c47d8e9f00112233445566", Owner: events.Owner{Account: "a"}}
	now := events.NewTime(time.Date(2026, 4, 29, 12, 0, 0, 0, time.UTC))
	f.Fuzz(func(t *testing.T, name, value string) {
		in := domain.CredentialInput{Headers: domain.Value(map[string]string{name: value})}
		_, err := domain.CreateCredential(srv, "mcp_cred_0194f3a2b1c47d8e9f00112233445566", in, now)
		if err != nil {
			return
		}
		if e := validateAuth(Auth{Type: AuthHeaders, Headers: map[string]string{name: value}}); e != nil {
			t.Fatalf("stored header %q: %q cannot be sent: %v", name, value, e)
		}
		if !httpguts.ValidHeaderFieldName(name) || !httpguts.ValidHeaderFieldValue(value) {
			t.Fatalf("stored header %q: %q is not valid HTTP", name, value)
		}
		canon := http.CanonicalHeaderKey(name)
		if forbiddenHeaders[canon] || strings.HasPrefix(canon, "Proxy-") {
			t.Fatalf("stored a forbidden header %q", name)
		}
	})
}

// FuzzBlockedReason: every address the standard library calls loopback,
// private, link-local, multicast or unspecified is refused, in IPv4,
// IPv4-mapped, NAT64 and 6to4 forms.
func FuzzBlockedReason(f *testing.F) {
	for _, s := range []string{"127.0.0.1", "10.1.2.3", "169.254.169.254", "::1", "fe80::1", "::ffff:127.0.0.1", "64:ff9b::7f00:1",
		"2002:7f00:1::", "8.8.8.8", "2606:4700::1111", "fd00:ec2::254", "100.100.100.200", "0.0.0.0", "ff02::1"} {
		f.Add(netip.MustParseAddr(s).AsSlice())
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		addr, ok := netip.AddrFromSlice(b)
		if !ok {
			return
		}
		check := func(a netip.Addr, form string) {
			u := a.Unmap()
			if (u.IsLoopback() || u.IsPrivate() || u.IsLinkLocalUnicast() || u.IsLinkLocalMulticast() ||
				u.IsInterfaceLocalMulticast() || u.IsMulticast() || u.IsUnspecified()) && blockedReason(a) == "" {
				t.Fatalf("%s %s is not refused", form, a)
			}
		}
		check(addr, "address")
		if addr.Is4() {
			b4 := addr.As4()
			check(netip.AddrFrom16(addr.As16()), "IPv4-mapped")
			if blockedReason(addr) != "" {
				nat64 := netip.MustParseAddr("64:ff9b::").As16()
				copy(nat64[12:], b4[:])
				sixto4 := netip.MustParseAddr("2002::").As16()
				copy(sixto4[2:6], b4[:])
				for form, a := range map[string]netip.Addr{"NAT64": netip.AddrFrom16(nat64), "6to4": netip.AddrFrom16(sixto4),
					"IPv4-mapped": netip.AddrFrom16(addr.As16())} {
					if blockedReason(a) == "" {
						t.Fatalf("%s form %s of refused %s is not refused", form, a, addr)
					}
				}
			}
		}
	})
}

// FuzzServerURL: a server URL is either refused up front, or its host is
// judged the same way the dialer will see it: a literal address (in any
// numeric form) that is not public never passes, and the host the client
// will connect to is the host that was checked.
func FuzzServerURL(f *testing.F) {
	for _, s := range []string{"https://mcp.linear.app/mcp", "http://127.0.0.1:8080/", "http://0x7f.1/", "http://2130706433/",
		"http://[::ffff:127.0.0.1]/", "http://[fe80::1%25eth0]/", "http://user:SECRET@example.com/", "http://example.com:0/",
		"http://0177.0.0.1/", "http://127.1/", "http://169.254.169.254/latest", "http://[64:ff9b::a9fe:a9fe]/", "http://1.2.3.4.5/",
		"http://example.com./", "HTTP://EXAMPLE.COM", "http://example.com\\@127.0.0.1/", "http://%31%32%37.0.0.1/"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		u, target, fail := parseServerURL(raw)
		if strings.Contains(target, "@") {
			t.Fatalf("the audit target %q holds userinfo", target)
		}
		if fail != nil {
			return
		}
		if u.User != nil {
			t.Fatal("userinfo kept")
		}
		// What the transport will dial: the host of the URL as it is sent.
		again, err := url.Parse(u.String())
		if err != nil {
			t.Fatalf("the cleaned URL %q does not parse again: %v", u.String(), err)
		}
		if again.Hostname() != u.Hostname() {
			t.Fatalf("host changes between check and dial: %q vs %q", u.Hostname(), again.Hostname())
		}
		addr, isIP, err := parseHostAddr(u.Hostname())
		if std, perr := netip.ParseAddr(u.Hostname()); perr == nil && (!isIP || err != nil || addr != std) {
			t.Fatalf("literal %q judged as %v %v %v", u.Hostname(), addr, isIP, err)
		}
		if !isIP {
			// A name is resolved, and every answer checked at dial time; it
			// must not be a number-based address in disguise.
			labels := strings.Split(strings.TrimSuffix(u.Hostname(), "."), ".")
			if isNumericLabel(labels[len(labels)-1]) {
				t.Fatalf("%q ends in a number but is treated as a name", u.Hostname())
			}
		}
	})
}
