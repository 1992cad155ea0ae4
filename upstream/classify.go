package upstream

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"strings"
	"syscall"
)

// classifyTransportError maps an error from the base http.Transport (no HTTP
// response) to a stable code. The message is built here from the code and
// the target host; the raw error text is never used.
func (a *attempt) classifyTransportError(err error) *Error {
	var blocked *blockedError
	if errors.As(err, &blocked) {
		if blocked.reason == "ambiguous numeric address" {
			return errorf(CodeDestinationBlocked, "%s is an ambiguous numeric address; refused", a.target)
		}
		return errorf(CodeDestinationBlocked, "%s resolves to an address that is not public (%s); outbound connections to it are not allowed", a.target, blocked.reason)
	}
	var own *Error
	if errors.As(err, &own) {
		return own
	}
	if e := a.contextError(); e != nil {
		return e
	}
	if isTLSError(err) {
		return errorf(CodeTLSError, "the TLS handshake with %s failed", a.target)
	}
	var dnsErr *net.DNSError
	if errors.As(err, &dnsErr) {
		if dnsErr.IsTimeout {
			return errorf(CodeTimeout, "resolving %s timed out", a.target)
		}
		return errorf(CodeUnreachable, "could not resolve %s", a.target)
	}
	var netErr net.Error
	if errors.As(err, &netErr) && netErr.Timeout() {
		return errorf(CodeTimeout, "%s did not answer in time", a.target)
	}
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return errorf(CodeUnreachable, "%s refused the connection", a.target)
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		return errorf(CodeUnreachable, "%s reset the connection", a.target)
	case errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ENETUNREACH):
		return errorf(CodeUnreachable, "no route to %s", a.target)
	}
	return errorf(CodeUnreachable, "could not connect to %s", a.target)
}

func isTLSError(err error) bool {
	var (
		verr     *tls.CertificateVerificationError
		unknown  x509.UnknownAuthorityError
		hostname x509.HostnameError
		invalid  x509.CertificateInvalidError
		record   tls.RecordHeaderError
		alert    tls.AlertError
		ech      *tls.ECHRejectionError
	)
	if errors.As(err, &verr) || errors.As(err, &unknown) || errors.As(err, &hostname) ||
		errors.As(err, &invalid) || errors.As(err, &record) || errors.As(err, &alert) || errors.As(err, &ech) {
		return true
	}
	// Some TLS failures are plain errors.New values; matching on the
	// package prefix is the only way to recognise them.
	msg := err.Error()
	return strings.Contains(msg, "tls: ") || strings.Contains(msg, "x509: ") ||
		strings.Contains(msg, "server gave HTTP response to HTTPS client")
}
