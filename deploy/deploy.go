// Package deploy holds what an operator deploys: the NATS node config
// template (nats/nats-server.conf.tmpl), systemd units, the environment file,
// compose and Kubernetes manifests. The template is embedded so that the
// embedded server of `vault run`, the nodes of `make cluster` and the
// operator's rendered configs (`vault nats-config`) are the same text.
package deploy

import (
	_ "embed"
	"fmt"
	"strings"
	"text/template"
)

//go:embed nats/nats-server.conf.tmpl
var natsTemplate string

// Roles are the NATS users of the vault, one per role.
var Roles = []string{"api", "projector", "audit"}

// NATSNode is the per-node input of the NATS config template.
type NATSNode struct {
	ServerName   string
	Listen       string // host:port for clients
	StoreDir     string
	SyncInterval string // "always" (default) or a duration such as 2m
	Stream       string // the event stream (VAULT_STREAM); default VAULT
	// Passwords per role (api, projector, audit): plain text, or bcrypt
	// hashes ("$2a$…"), which nats-server accepts in place of passwords.
	Passwords map[string]string
	TLS       *TLS     // optional client (and route) TLS
	Cluster   *Cluster // optional; nil for a single server
}

// TLS names the PEM files of a node's certificate, key and the CA that signs clients.
type TLS struct{ Cert, Key, CA string }

// Cluster is the route configuration of a node.
type Cluster struct {
	Name     string
	Listen   string   // host:port for routes
	Routes   []string // host:port of every node (its own included is fine)
	Password string   // the route user's password (same on every node)
}

// RenderNATS renders the node config.
func RenderNATS(n NATSNode) (string, error) {
	if n.Stream == "" {
		n.Stream = "VAULT"
	}
	if n.SyncInterval == "" {
		n.SyncInterval = "always"
	}
	for _, r := range Roles {
		if p := n.Passwords[r]; p == "" || strings.ContainsAny(p, "\"\\\n") {
			return "", fmt.Errorf("deploy: password of NATS user %s missing or contains a quote, backslash or newline", r)
		}
	}
	if n.Cluster != nil && (n.Cluster.Password == "" || strings.ContainsAny(n.Cluster.Password, "\"\\\n@:/")) {
		return "", fmt.Errorf("deploy: route password missing or contains one of \" \\ @ : / or a newline")
	}
	t, err := template.New("nats").Funcs(template.FuncMap{"list": func(s ...string) []string { return s }}).Parse(natsTemplate)
	if err != nil {
		return "", err
	}
	var b strings.Builder
	err = t.Execute(&b, struct {
		NATSNode
		StreamLower string
	}{n, strings.ToLower(n.Stream)})
	return b.String(), err
}
