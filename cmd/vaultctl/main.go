// Command vaultctl is the MCP Vault operator CLI. It reads the same
// environment as the other binaries (VAULT_DATA_DIR, VAULT_NATS_URL,
// VAULT_STREAM, VAULT_MASTER_KEYS, VAULT_AUDIT_KEYS, …), so beside `make run`
// it works from the repository root with no flags. It connects to NATS with
// the role each command needs (audit for tail and verify, projector for
// rebuild, api for everything that writes) and to the API for the listing
// and test commands.
//
// Exit codes: 0 success; 1 the command ran and found a problem (a break in
// the stream's tamper evidence, a failed test) or failed; 2 usage error;
// 3 NATS or the API could not be reached.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/mcpvault/vault/cmd/internal/config"
	"github.com/mcpvault/vault/eventstore"
)

// Exit codes.
const (
	exitOK          = 0
	exitProblem     = 1
	exitUsage       = 2
	exitUnavailable = 3
)

const usage = `vaultctl — MCP Vault operator CLI

usage: vaultctl [--json] <command> [flags]

  audit tail [--since SEQ|TIME|DURATION] [--owner ACCOUNT[:USER]] [--name DURABLE] [--once]
                             follow the event stream through a durable consumer, one line per event;
                             a restarted tail resumes where it stopped
  audit verify [--unsigned-until SEQ] [--all]
                             check every event's signature and chain link; exit 1 at a break
  audit reject SEQ           append a signed rejection of the broken event at SEQ
  audit keys                 print the audit public keys (VAULT_AUDIT_PUBLIC_KEYS form)
  keys rotate                re-wrap every live data key under the first key of VAULT_MASTER_KEYS
  erase --account A --user U destroy the end user's owner key and everything it protects
  rebuild                    rebuild the read model from the stream (as projector rebuild)
  servers --account A [--user U]             list the owner's servers (through the API)
  credentials SERVER --account A [--user U]  list a server's credentials
  test SERVER --account A [--user U] [--credential C]   testServer

--json prints machine-readable output. Exit codes: 0 ok, 1 problem found or
command failed, 2 usage, 3 NATS or the API unreachable.
`

// usageError is a command line mistake (exit 2).
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

// cli is one invocation.
type cli struct {
	cfg    config.Config
	json   bool
	stdout io.Writer
	stderr io.Writer
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	c := &cli{stdout: stdout, stderr: stderr}
	for len(args) > 0 && (args[0] == "--json" || args[0] == "-json") {
		c.json, args = true, args[1:]
	}
	if len(args) == 0 || args[0] == "help" || args[0] == "--help" || args[0] == "-h" {
		fmt.Fprint(stdout, usage)
		if len(args) == 0 {
			return exitUsage
		}
		return exitOK
	}
	cfg, err := config.Load()
	if err != nil {
		fmt.Fprintln(stderr, "vaultctl:", err)
		return exitUsage
	}
	c.cfg = cfg
	err = c.dispatch(ctx, args)
	var ue usageError
	var pe problemError
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &ue):
		fmt.Fprintf(stderr, "vaultctl: %v\n\n%s", err, usage)
		return exitUsage
	case errors.As(err, &pe):
		return exitProblem // the command already reported it
	case errors.Is(err, eventstore.ErrUnavailable) || errors.Is(err, errUnreachable):
		fmt.Fprintln(stderr, "vaultctl:", err)
		return exitUnavailable
	default:
		fmt.Fprintln(stderr, "vaultctl:", err)
		return exitProblem
	}
}

// problemError: the command reported a finding itself; exit 1.
type problemError struct{ msg string }

func (e problemError) Error() string { return e.msg }

var errUnreachable = errors.New("unreachable")

func (c *cli) dispatch(ctx context.Context, args []string) error {
	cmd, rest := args[0], args[1:]
	sub := func() (string, []string) {
		if len(rest) == 0 {
			return "", nil
		}
		return rest[0], rest[1:]
	}
	switch cmd {
	case "audit":
		s, r := sub()
		switch s {
		case "tail":
			return c.auditTail(ctx, r)
		case "verify":
			return c.auditVerify(ctx, r)
		case "reject":
			return c.auditReject(ctx, r)
		case "keys":
			return c.auditKeys(r)
		}
		return usageError{fmt.Sprintf("audit: unknown subcommand %q", s)}
	case "keys":
		s, r := sub()
		if s == "rotate" {
			return c.keysRotate(ctx, r)
		}
		return usageError{fmt.Sprintf("keys: unknown subcommand %q", s)}
	case "erase":
		return c.erase(ctx, rest)
	case "rebuild":
		return c.rebuild(ctx, rest)
	case "servers":
		return c.servers(ctx, rest)
	case "credentials":
		return c.credentials(ctx, rest)
	case "test":
		return c.test(ctx, rest)
	}
	return usageError{fmt.Sprintf("unknown command %q", cmd)}
}

// emit prints v as one JSON line.
func (c *cli) emit(v any) {
	b, _ := json.Marshal(v)
	fmt.Fprintf(c.stdout, "%s\n", b)
}
