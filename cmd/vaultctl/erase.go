package main

import (
	"context"
	"fmt"

	"github.com/mcpvault/vault/app"
	"github.com/mcpvault/vault/events"
	"github.com/mcpvault/vault/projections"
)

// erase runs the API's erase operation directly on the stream (NATS role
// api), with the same code: the owner's servers are deleted, mcp.owner.erased
// appended and the owner key destroyed.
func (c *cli) erase(ctx context.Context, args []string) error {
	fs := newFlags("erase")
	account := fs.String("account", "", "")
	user := fs.String("user", "", "")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *account == "" || *user == "" {
		return usageError{"erase needs --account and --user"}
	}
	kr, _, err := c.cfg.MasterKeys()
	if err != nil {
		return err
	}
	w, err := c.openWriter(ctx)
	if err != nil {
		return err
	}
	defer w.Close()
	db, err := projections.Open(ctx, c.cfg.ReadModelPath, projections.Reader)
	if err != nil {
		return err
	}
	defer db.Close()
	unsignedUntil, err := c.cfg.UnsignedUntil()
	if err != nil {
		return err
	}
	v := &app.Vault{DB: db, Keys: kr, Audit: w.sign, UnsignedUntil: unsignedUntil, Log: c.cfg.Logger("vaultctl")}
	v.SetStore(w.store)
	owner := events.Owner{Account: *account, User: *user}
	e, err := v.EraseOwner(ctx, owner)
	if err != nil {
		return err
	}
	if c.json {
		c.emit(map[string]any{"object": "mcp.owner.erased", "account": owner.Account, "user": owner.User,
			"owner_key_id": e.OwnerKeyID, "deleted_server_ids": e.ServerIDs, "event_seq": e.Written.Seq})
		return nil
	}
	fmt.Fprintf(c.stdout, "erased account=%s user=%s: owner key %s destroyed, %d servers deleted, recorded at sequence %d\n",
		quoteIfNeeded(owner.Account), quoteIfNeeded(owner.User), e.OwnerKeyID, len(e.ServerIDs), e.Written.Seq)
	return nil
}
