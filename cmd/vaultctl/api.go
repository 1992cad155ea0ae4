package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/mcpvault/vault/service"
)

// apiClient calls the vault's HTTP API as one account (and end user).
type apiClient struct {
	base, key, user string
	http            *http.Client
}

// ownerFlags are --account and --user.
type ownerFlags struct{ account, user *string }

func (c *cli) apiClient(o ownerFlags) (*apiClient, error) {
	keys, _, err := c.cfg.APIKeys()
	if err != nil {
		return nil, err
	}
	base := os.Getenv("VAULT_API_URL")
	if base == "" {
		base = "http://" + c.cfg.HTTPAddr
	}
	base = strings.TrimRight(base, "/") + "/api/v1/llm/mcp"
	for _, k := range keys {
		if *o.account == "" || k.Account == *o.account {
			return &apiClient{base: base, key: k.Key, user: *o.user, http: &http.Client{Timeout: 60 * time.Second}}, nil
		}
	}
	return nil, usageError{fmt.Sprintf("--account %q has no key in VAULT_API_KEYS", *o.account)}
}

func (a *apiClient) do(ctx context.Context, method, path string, body any, out any) (int, error) {
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, a.base+path, rd)
	if err != nil {
		return 0, err
	}
	req.Header.Set("Authorization", "Bearer "+a.key)
	if a.user != "" {
		req.Header.Set("X-On-Behalf-Of", a.user)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := a.http.Do(req)
	if err != nil {
		return 0, fmt.Errorf("%w: the API at %s: %v", errUnreachable, a.base, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	if err != nil {
		return 0, err
	}
	if resp.StatusCode >= 300 {
		var e struct {
			Error struct{ Message, Type string } `json:"error"`
		}
		json.Unmarshal(raw, &e)
		if resp.StatusCode >= 500 {
			return resp.StatusCode, fmt.Errorf("%w: %s %s: %d %s", errUnreachable, method, path, resp.StatusCode, e.Error.Message)
		}
		return resp.StatusCode, fmt.Errorf("%s %s: %d %s", method, path, resp.StatusCode, e.Error.Message)
	}
	return resp.StatusCode, json.Unmarshal(raw, out)
}

// listAll pages through a list operation.
func (a *apiClient) listAll(ctx context.Context, path string) ([]map[string]any, error) {
	var all []map[string]any
	after := ""
	for {
		q := url.Values{"limit": {"100"}, "order": {"asc"}}
		if after != "" {
			q.Set("after", after)
		}
		var page struct {
			Data    []map[string]any `json:"data"`
			HasMore bool             `json:"has_more"`
			LastID  *string          `json:"last_id"`
		}
		if _, err := a.do(ctx, "GET", path+"?"+q.Encode(), nil, &page); err != nil {
			return nil, err
		}
		all = append(all, page.Data...)
		if !page.HasMore || page.LastID == nil {
			return all, nil
		}
		after = *page.LastID
	}
}

func (c *cli) ownerFlagSet(name string) (*ownerFlagsSet, ownerFlags) {
	fs := newFlags(name)
	o := ownerFlags{account: fs.String("account", "", ""), user: fs.String("user", "", "")}
	return &ownerFlagsSet{fs}, o
}

// ownerFlagsSet is a flag set with --account and --user.
type ownerFlagsSet struct{ *flag.FlagSet }

func (c *cli) table(rows []map[string]any, cols ...string) {
	if c.json {
		if rows == nil {
			rows = []map[string]any{}
		}
		c.emit(rows)
		return
	}
	tw := tabwriter.NewWriter(c.stdout, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, strings.ToUpper(strings.Join(cols, "\t")))
	for _, r := range rows {
		vals := make([]string, len(cols))
		for i, col := range cols {
			switch v := r[col].(type) {
			case nil:
				vals[i] = "-"
			case string:
				vals[i] = v
			default:
				b, _ := json.Marshal(v)
				vals[i] = string(b)
			}
		}
		fmt.Fprintln(tw, strings.Join(vals, "\t"))
	}
	tw.Flush()
}

// positional splits leading positional arguments from flags.
func positional(args []string, n int) ([]string, []string) {
	var pos []string
	for len(args) > 0 && len(pos) < n && !strings.HasPrefix(args[0], "-") {
		pos, args = append(pos, args[0]), args[1:]
	}
	return pos, args
}

func (c *cli) servers(ctx context.Context, args []string) error {
	fs, o := c.ownerFlagSet("servers")
	if err := parse(fs.FlagSet, args); err != nil {
		return err
	}
	a, err := c.apiClient(o)
	if err != nil {
		return err
	}
	rows, err := a.listAll(ctx, "/servers")
	if err != nil {
		return err
	}
	c.table(rows, "id", "server_label", "name", "server_url", "created_at")
	return nil
}

func (c *cli) credentials(ctx context.Context, args []string) error {
	pos, args := positional(args, 1)
	fs, o := c.ownerFlagSet("credentials")
	if err := parse(fs.FlagSet, args); err != nil {
		return err
	}
	if len(pos) != 1 {
		return usageError{"credentials takes a server id"}
	}
	a, err := c.apiClient(o)
	if err != nil {
		return err
	}
	rows, err := a.listAll(ctx, "/servers/"+url.PathEscape(pos[0])+"/credentials")
	if err != nil {
		return err
	}
	c.table(rows, "id", "name", "auth_type", "authorization_preview", "expires_at", "last_used_at", "revoked_at")
	return nil
}

func (c *cli) test(ctx context.Context, args []string) error {
	pos, args := positional(args, 1)
	fs, o := c.ownerFlagSet("test")
	cred := fs.String("credential", "", "")
	if err := parse(fs.FlagSet, args); err != nil {
		return err
	}
	if len(pos) != 1 {
		return usageError{"test takes a server id"}
	}
	a, err := c.apiClient(o)
	if err != nil {
		return err
	}
	var body any
	if *cred != "" {
		body = map[string]string{"credential_id": *cred}
	}
	var res map[string]any
	if _, err := a.do(ctx, "POST", "/servers/"+url.PathEscape(pos[0])+"/test", body, &res); err != nil {
		return err
	}
	if c.json {
		c.emit(res)
	} else if res["connected"] == true {
		fmt.Fprintf(c.stdout, "connected: %v tools %v\n", res["tool_count"], res["tool_names"])
	} else {
		e, _ := res["error"].(map[string]any)
		fmt.Fprintf(c.stdout, "not connected: %v (%v)\n", e["code"], e["message"])
	}
	if res["connected"] != true {
		return problemError{"not connected"}
	}
	return nil
}

func (c *cli) rebuild(ctx context.Context, args []string) error {
	if len(args) > 0 {
		return usageError{"rebuild takes no arguments"}
	}
	log := c.cfg.Logger("vaultctl")
	keys, err := c.cfg.ProjectorAuditKeys()
	if err != nil {
		return err
	}
	unsignedUntil, err := c.cfg.UnsignedUntil()
	if err != nil {
		return err
	}
	natsURL, natsAuth, err := c.cfg.NATS("projector")
	if err != nil {
		return fmt.Errorf("%w: %v", errUnreachable, err)
	}
	natsAuth.FailFast = true
	return (&service.Rebuild{NATSURL: natsURL, NATSAuth: natsAuth, Stream: c.cfg.Stream, Replicas: c.cfg.Replicas,
		ReadModelPath: c.cfg.ReadModelPath, Log: log, Progress: c.stderr, AuditKeys: keys, UnsignedUntil: unsignedUntil}).Run(ctx)
}
