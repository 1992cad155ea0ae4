package upstream

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// blockedError reports that a destination was refused by the SSRF guard. It
// carries only the class of the address, never the address itself.
type blockedError struct {
	reason string
}

func (e *blockedError) Error() string { return "destination blocked: " + e.reason }

// errInvalidNumericHost reports a host that looks like a number-based IPv4
// address (it ends in a numeric label) but is not a valid one.
var errInvalidNumericHost = errors.New("host ends in a number but is not a valid IPv4 address")

type addrRule struct {
	prefix netip.Prefix
	reason string
}

// Cloud metadata endpoints are refused even though some of them also fall in
// a blocked range, so that the reason names them.
var metadataAddrs = map[netip.Addr]bool{
	netip.MustParseAddr("169.254.169.254"): true, // AWS, GCP, Azure, OpenStack, ...
	netip.MustParseAddr("fd00:ec2::254"):   true, // AWS IMDS over IPv6
	netip.MustParseAddr("100.100.100.200"): true, // Alibaba Cloud
}

func rule(prefix, reason string) addrRule {
	return addrRule{prefix: netip.MustParsePrefix(prefix), reason: reason}
}

// blockedRules lists every range that is not a public unicast destination.
// Order matters only for the reason reported.
var blockedRules = []addrRule{
	// IPv4.
	rule("0.0.0.0/8", "unspecified"),
	rule("127.0.0.0/8", "loopback"),
	rule("10.0.0.0/8", "private"),
	rule("172.16.0.0/12", "private"),
	rule("192.168.0.0/16", "private"),
	rule("100.64.0.0/10", "shared address space"),
	rule("169.254.0.0/16", "link-local"),
	rule("192.0.0.0/24", "reserved"),
	rule("192.0.2.0/24", "reserved"),
	rule("198.18.0.0/15", "reserved"),
	rule("198.51.100.0/24", "reserved"),
	rule("203.0.113.0/24", "reserved"),
	rule("224.0.0.0/4", "multicast"),
	rule("255.255.255.255/32", "broadcast"),
	rule("240.0.0.0/4", "reserved"),
	// IPv6.
	rule("::/128", "unspecified"),
	rule("::1/128", "loopback"),
	rule("::/96", "reserved"), // IPv4-compatible addresses (deprecated)
	rule("64:ff9b:1::/48", "reserved"),
	rule("100::/64", "reserved"),
	rule("2001::/32", "reserved"), // Teredo: hides an arbitrary IPv4 address
	rule("2001:db8::/32", "reserved"),
	rule("fc00::/7", "private"),
	rule("fe80::/10", "link-local"),
	rule("fec0::/10", "private"), // deprecated site-local
	rule("ff00::/8", "multicast"),
}

var (
	nat64Prefix     = netip.MustParsePrefix("64:ff9b::/96")
	sixToFourPrefix = netip.MustParsePrefix("2002::/16")
)

// blockedReason returns why addr must not be contacted, or "" when it is a
// public unicast address. IPv4-mapped IPv6 addresses are judged as the IPv4
// address they carry, and so are NAT64 and 6to4 addresses.
func blockedReason(addr netip.Addr) string {
	if !addr.IsValid() {
		return "invalid address"
	}
	addr = addr.WithZone("").Unmap()
	if metadataAddrs[addr] {
		return "cloud metadata"
	}
	for _, r := range blockedRules {
		if r.prefix.Contains(addr) {
			return r.reason
		}
	}
	if addr.Is6() {
		b := addr.As16()
		var embedded netip.Addr
		switch {
		case nat64Prefix.Contains(addr):
			embedded = netip.AddrFrom4([4]byte{b[12], b[13], b[14], b[15]})
		case sixToFourPrefix.Contains(addr):
			embedded = netip.AddrFrom4([4]byte{b[2], b[3], b[4], b[5]})
		}
		if embedded.IsValid() {
			if reason := blockedReason(embedded); reason != "" {
				return reason
			}
		}
	}
	return ""
}

// parseHostAddr interprets host (a URL host name without port or brackets)
// the way browsers do (WHATWG URL host parsing): an IP literal, or, when its
// last label is numeric, a number-based IPv4 address in any of the
// decimal/octal/hex forms ("2130706433", "0177.0.0.1", "0x7f.1", "127.1").
// isIP is false for an ordinary host name, which must be resolved.
func parseHostAddr(host string) (addr netip.Addr, isIP bool, err error) {
	if a, err := netip.ParseAddr(host); err == nil {
		return a, true, nil
	}
	if strings.Contains(host, ":") {
		return netip.Addr{}, true, errInvalidNumericHost
	}
	h := strings.TrimSuffix(host, ".")
	if h == "" {
		return netip.Addr{}, false, nil
	}
	parts := strings.Split(h, ".")
	if !isNumericLabel(parts[len(parts)-1]) {
		return netip.Addr{}, false, nil
	}
	if len(parts) > 4 {
		return netip.Addr{}, true, errInvalidNumericHost
	}
	var nums []uint64
	for _, p := range parts {
		n, ok := parseIPv4Number(p)
		if !ok {
			return netip.Addr{}, true, errInvalidNumericHost
		}
		nums = append(nums, n)
	}
	last := len(nums) - 1
	for _, n := range nums[:last] {
		if n > 255 {
			return netip.Addr{}, true, errInvalidNumericHost
		}
	}
	if nums[last] >= 1<<(8*(5-len(nums))) {
		return netip.Addr{}, true, errInvalidNumericHost
	}
	v := nums[last]
	for i, n := range nums[:last] {
		v += n << (8 * (3 - i))
	}
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)}), true, nil
}

// isNumericLabel reports whether a label is all decimal digits or a 0x hex
// number (WHATWG "ends in a number").
func isNumericLabel(s string) bool {
	if s == "" {
		return false
	}
	if strings.HasPrefix(s, "0x") || strings.HasPrefix(s, "0X") {
		return strings.Trim(s[2:], "0123456789abcdefABCDEF") == ""
	}
	return strings.Trim(s, "0123456789") == ""
}

// parseIPv4Number parses one part of a number-based IPv4 address: 0x-prefixed
// hex, 0-prefixed octal, or decimal.
func parseIPv4Number(s string) (uint64, bool) {
	if s == "" {
		return 0, false
	}
	base := 10
	switch {
	case strings.HasPrefix(s, "0x") || strings.HasPrefix(s, "0X"):
		s, base = s[2:], 16
		if s == "" {
			return 0, true
		}
	case len(s) > 1 && s[0] == '0':
		s, base = s[1:], 8
	}
	n, err := strconv.ParseUint(s, base, 64)
	if err != nil || n > 1<<32 {
		return 0, false
	}
	return n, true
}

// lookupFunc resolves a host name to addresses.
type lookupFunc func(ctx context.Context, host string) ([]netip.Addr, error)

// dialFunc opens a connection to an address that has already been checked.
type dialFunc func(ctx context.Context, network, address string) (net.Conn, error)

// guard is the SSRF-safe dialer: it resolves the host itself, refuses the
// connection when any resolved address is blocked, and dials the checked IP
// (never the name again, so a second DNS answer cannot differ). The default
// dialer also re-checks the socket address just before connect.
type guard struct {
	allowPrivate bool
	lookup       lookupFunc
	dial         dialFunc
}

func newGuard(allowPrivate bool, timeout time.Duration, lookup lookupFunc, dial dialFunc) *guard {
	g := &guard{allowPrivate: allowPrivate, lookup: lookup, dial: dial}
	if g.lookup == nil {
		g.lookup = func(ctx context.Context, host string) ([]netip.Addr, error) {
			return net.DefaultResolver.LookupNetIP(ctx, "ip", host)
		}
	}
	if g.dial == nil {
		d := &net.Dialer{Timeout: timeout, KeepAlive: 30 * time.Second, Control: g.control}
		g.dial = d.DialContext
	}
	return g
}

// check returns a *blockedError when addr may not be contacted.
func (g *guard) check(addr netip.Addr) error {
	if g.allowPrivate {
		return nil
	}
	if reason := blockedReason(addr); reason != "" {
		return &blockedError{reason: reason}
	}
	return nil
}

// control runs right before connect(2) on the socket address actually used.
func (g *guard) control(_, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return &blockedError{reason: "unparsable socket address"}
	}
	return g.check(ap.Addr())
}

// resolve returns the addresses for host, all of them checked.
func (g *guard) resolve(ctx context.Context, host string) ([]netip.Addr, error) {
	addr, isIP, err := parseHostAddr(host)
	if err != nil {
		return nil, &blockedError{reason: "ambiguous numeric address"}
	}
	var addrs []netip.Addr
	if isIP {
		addrs = []netip.Addr{addr}
	} else {
		addrs, err = g.lookup(ctx, host)
		if err != nil {
			return nil, err
		}
		if len(addrs) == 0 {
			return nil, &net.DNSError{Err: "no addresses", Name: host, IsNotFound: true}
		}
	}
	// Refuse when any address is blocked: a name that mixes public and
	// private answers is a rebinding attempt, not a service to test.
	for _, a := range addrs {
		if err := g.check(a); err != nil {
			return nil, err
		}
	}
	return addrs, nil
}

// DialContext is the http.Transport dial hook.
func (g *guard) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	host, port, err := net.SplitHostPort(address)
	if err != nil {
		return nil, &blockedError{reason: "unparsable address"}
	}
	addrs, err := g.resolve(ctx, host)
	if err != nil {
		return nil, err
	}
	var firstErr error
	for _, a := range addrs {
		conn, err := g.dial(ctx, network, net.JoinHostPort(a.Unmap().String(), port))
		if err == nil {
			return conn, nil
		}
		if firstErr == nil {
			firstErr = err
		}
		if ctx.Err() != nil {
			break
		}
	}
	return nil, firstErr
}
