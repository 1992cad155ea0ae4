package natsserver_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/mcpvault/vault/deploy"
	"github.com/mcpvault/vault/eventstore"
	"github.com/mcpvault/vault/internal/natsserver"
)

// writeCert writes a certificate signed by parent (self-signed when parent
// is nil) and its key as PEM files, returning the certificate and key.
func writeCert(t *testing.T, dir, name string, isCA bool, parent *x509.Certificate, parentKey *ecdsa.PrivateKey) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: name},
		NotBefore:    time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
	}
	if isCA {
		tmpl.IsCA, tmpl.BasicConstraintsValid = true, true
	}
	if parent == nil {
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		t.Fatal(err)
	}
	kb, _ := x509.MarshalECPrivateKey(key)
	os.WriteFile(filepath.Join(dir, name+".pem"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(filepath.Join(dir, name+"-key.pem"), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600)
	cert, _ := x509.ParseCertificate(der)
	return cert, key
}

// TestTLSNodeFromTheDeployTemplate: a node rendered with TLS (what
// `vault nats-config --tls-*` prints) accepts the api user with a client
// certificate (VAULT_NATS_TLS_*), and refuses a client without one.
func TestTLSNodeFromTheDeployTemplate(t *testing.T) {
	dir := t.TempDir()
	ca, caKey := writeCert(t, dir, "ca", true, nil, nil)
	writeCert(t, dir, "server", false, ca, caKey)
	writeCert(t, dir, "client", false, ca, caKey)
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := l.Addr().String()
	l.Close()
	pw := map[string]string{"api": natsserver.NewPassword(), "projector": natsserver.NewPassword(), "audit": natsserver.NewPassword()}
	conf, err := deploy.RenderNATS(deploy.NATSNode{ServerName: "tls-1", Listen: addr, StoreDir: filepath.Join(dir, "js"), Passwords: pw,
		TLS: &deploy.TLS{Cert: filepath.Join(dir, "server.pem"), Key: filepath.Join(dir, "server-key.pem"), CA: filepath.Join(dir, "ca.pem")}})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(conf, `sync_interval: "always"`) {
		t.Fatalf("rendered config does not fsync always:\n%s", conf)
	}
	path := filepath.Join(dir, "nats.conf")
	os.WriteFile(path, []byte(conf), 0o600)
	s, err := natsserver.StartConfigFile(path, false)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Shutdown()

	nc, err := eventstore.Dial("nats://"+addr, "tls-test", eventstore.Auth{Role: eventstore.RoleAPI, User: "api", Password: pw["api"],
		TLSCA: filepath.Join(dir, "ca.pem"), TLSCert: filepath.Join(dir, "client.pem"), TLSKey: filepath.Join(dir, "client-key.pem"), FailFast: true})
	if err != nil {
		t.Fatalf("api with TLS: %v", err)
	}
	defer nc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := eventstore.Open(ctx, nc, eventstore.Config{Stream: "VAULT"})
	if err != nil {
		t.Fatalf("api opens the streams over TLS: %v", err)
	}
	if _, err := st.Append(ctx, "vault.mcp_srv_1.server", []byte(`{}`), eventstore.MsgID("m1")); err != nil {
		t.Fatalf("append over TLS: %v", err)
	}

	if nc, err := nats.Connect("nats://"+addr, nats.UserInfo("api", pw["api"]), nats.RootCAs(filepath.Join(dir, "ca.pem")), nats.Timeout(2*time.Second)); err == nil {
		nc.Close()
		t.Fatal("a client without a certificate connected")
	}
	if nc, err := nats.Connect("nats://"+addr, nats.Timeout(2*time.Second)); err == nil {
		nc.Close()
		t.Fatal("a plain-text client connected")
	}
}
