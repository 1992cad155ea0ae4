// Command vault runs the whole vault on one machine (`vault run`, what
// `make run` calls): an embedded NATS JetStream server under VAULT_DATA_DIR
// when VAULT_NATS_URL is unset, with one NATS user per role, and the api and
// projector binaries beside it as separate processes, as in production.
// SIGINT or SIGTERM stops all of them cleanly; the children also die with it
// when it is killed (parent-death signal).
//
// `vault cluster` (make cluster) runs three NATS nodes and two vault
// replicas on loopback; `vault nats-config` renders a node config from the
// deploy template for an operator.
package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
)

const usage = `usage: vault <command> [flags]

Commands:
  run          the whole vault on this machine in the foreground (make run): the embedded NATS
               JetStream server (unless VAULT_NATS_URL is set), the projector and the API.
               Environment: see README.md "Configuration".
  cluster      three NATS nodes and two vault replicas on loopback in the foreground (make cluster)
  nats-config  print a NATS node config rendered from the deploy template (see --help)

Flags:
  -h, --help   this help
`

func main() {
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	var err error
	switch cmd, args := os.Args[1], os.Args[2:]; cmd {
	case "-h", "--help", "help":
		fmt.Print(usage)
		return
	case "run":
		if helpAsked(args) {
			fmt.Print(usage)
			return
		}
		err = run()
	case "cluster":
		err = clusterCmd(args)
	case "nats-config":
		err = natsConfig(args)
	case "nats-node": // hidden: one node of `vault cluster` and of the cluster tests
		err = natsNode(args)
	default:
		fmt.Fprintf(os.Stderr, "vault: unknown command %q\n%s", cmd, usage)
		os.Exit(2)
	}
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "vault:", err)
		os.Exit(1)
	}
}

func helpAsked(args []string) bool {
	for _, a := range args {
		if a == "-h" || a == "--help" || a == "-help" {
			return true
		}
	}
	return false
}
