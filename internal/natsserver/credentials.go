package natsserver

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"

	"github.com/mcpvault/vault/deploy"
)

// NewPassword returns a random password (hex, 48 characters).
func NewPassword() string {
	b := make([]byte, 24)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// LoadOrCreatePasswords reads the password of each role from the URL files
// in dir (<role>.url), generating the missing ones. Passwords are created
// once and kept across restarts.
func LoadOrCreatePasswords(dir string) (map[string]string, error) {
	pw := make(map[string]string, len(deploy.Roles))
	for _, role := range deploy.Roles {
		b, err := os.ReadFile(filepath.Join(dir, role+".url"))
		switch {
		case err == nil:
			first, _, _ := strings.Cut(string(trimSpace(b)), ",")
			u, perr := url.Parse(first)
			if perr != nil || u.User == nil {
				return nil, fmt.Errorf("natsserver: %s/%s.url is not a nats://user:password@host:port URL", dir, role)
			}
			p, _ := u.User.Password()
			if p == "" {
				return nil, fmt.Errorf("natsserver: %s/%s.url has no password", dir, role)
			}
			pw[role] = p
		case errors.Is(err, fs.ErrNotExist):
			pw[role] = NewPassword()
		default:
			return nil, err
		}
	}
	return pw, nil
}

// WriteURLs writes one URL per role, nats://<role>:<password>@<addr>, to
// dir/<role>.url with mode 0600 (comma-separated when there are several
// addresses, one per cluster node). A wildcard host (0.0.0.0, ::) is
// written as 127.0.0.1.
func WriteURLs(dir string, addrs []string, pw map[string]string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	for _, role := range deploy.Roles {
		var urls []string
		for _, addr := range addrs {
			host, port, err := net.SplitHostPort(addr)
			if err != nil {
				return err
			}
			if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
				host = "127.0.0.1"
			}
			urls = append(urls, URL(net.JoinHostPort(host, port), role, pw[role]))
		}
		u := strings.Join(urls, ",")
		path := filepath.Join(dir, role+".url")
		tmp := path + ".tmp"
		if err := os.WriteFile(tmp, []byte(u+"\n"), 0o600); err != nil {
			return err
		}
		if err := os.Rename(tmp, path); err != nil {
			return err
		}
	}
	return nil
}

// URL is the client URL of a role on addr (host:port).
func URL(addr, role, password string) string {
	return (&url.URL{Scheme: "nats", User: url.UserPassword(role, password), Host: addr}).String()
}

func trimSpace(b []byte) []byte {
	for len(b) > 0 && (b[len(b)-1] == '\n' || b[len(b)-1] == '\r' || b[len(b)-1] == ' ') {
		b = b[:len(b)-1]
	}
	return b
}
