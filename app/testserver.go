package app

import (
	"context"
	"errors"

	"github.com/mcpvault/vault/domain"
	"github.com/mcpvault/vault/events"
	"github.com/mcpvault/vault/eventstore"
	"github.com/mcpvault/vault/projections"
	"github.com/mcpvault/vault/seal"
)

// TestServer connects to the owner's server as an MCP client with a
// credential (credentialID, or else the newest usable one, or none) and lists
// its tools. Each use of a credential is recorded as an event before the
// answer, so last_used_at keeps the read-your-writes promise.
func (v *Vault) TestServer(ctx context.Context, in Intent, owner events.Owner, serverID, credentialID string) (TestResult, error) {
	if !domain.ValidServerID(serverID) {
		return TestResult{}, domain.ErrServerNotFound
	}
	if v.Tester == nil {
		return TestResult{}, errors.New("app: no upstream tester configured")
	}
	if err := v.Sync(ctx); err != nil {
		return TestResult{}, err
	}
	var (
		srv  domain.Server
		cred domain.Credential
	)
	now := v.now()
	err := v.DB.Snapshot(ctx, func(view projections.View) error {
		if err := view.Held(ctx, owner, serverID); err != nil {
			return err // the projector holds it: 503 aggregate_held
		}
		var err error
		if srv, _, err = view.GetServer(ctx, owner, serverID); err != nil {
			if errors.Is(err, projections.ErrNotFound) {
				return domain.ErrServerNotFound
			}
			return err
		}
		if credentialID != "" {
			cred, err = view.GetCredential(ctx, owner, serverID, credentialID)
			if errors.Is(err, projections.ErrNotFound) {
				return domain.ErrCredentialNotFound
			}
			return err
		}
		cred, err = view.NewestUsableCredential(ctx, owner, serverID, now.Time)
		if errors.Is(err, projections.ErrNotFound) {
			cred, err = domain.Credential{}, nil
		}
		return err
	})
	if err != nil {
		return TestResult{}, err
	}
	if cred.ID != "" && !cred.Usable(now.Time) {
		code, msg := "credential_revoked", "The credential is revoked; it was not sent."
		if cred.RevokedAt == nil {
			code, msg = "credential_expired", "The credential has expired; it was not sent."
		}
		return TestResult{ErrorCode: code, ErrorMsg: msg}, nil
	}
	var secret domain.Secret
	if cred.ID != "" {
		secret, err = v.OpenSecret(ctx, cred)
		switch {
		case errors.Is(err, eventstore.ErrKeyNotFound), errors.Is(err, seal.ErrDecrypt):
			return TestResult{ErrorCode: "credential_unreadable",
				ErrorMsg: "The credential's secret can no longer be decrypted."}, nil
		case err != nil:
			return TestResult{}, ErrUnavailable
		}
	}
	// From here the credential is sent: the probe runs to its end (bounded
	// by the tester's own timeout) whether or not the client waits, so the
	// use it records and the answer remembered under an Idempotency-Key are
	// the upstream's, not a cancellation caused by the client leaving.
	res := v.Tester.Test(context.WithoutCancel(ctx), srv.ServerURL, cred, secret, srv.AllowedTools)
	if cred.ID != "" && res.Sent {
		use := events.CredentialUsed{Operation: "test", Outcome: "connected", ToolCount: len(res.ToolNames),
			TargetHost: res.TargetHost}
		if !res.Connected {
			use.Outcome, use.ErrorCode, use.ToolCount = "failed", res.ErrorCode, 0
		}
		// Appended before the answer (last_used_at is read-your-writes for
		// testServer), with the write's event id, so that an idempotent
		// retry that takes this attempt over does not record it twice.
		_, recs, err := domain.RecordUse(cred, use, v.now())
		if err != nil {
			return TestResult{}, err
		}
		rec := recs[0]
		rec.ID = in.EventID
		st := v.Store()
		if st == nil {
			return TestResult{}, ErrUnavailable
		}
		wctx, cancel := v.writeContext(ctx)
		defer cancel()
		if res.Seq, err = v.appendEvent(wctx, st, rec, "", 0); err != nil {
			return TestResult{}, err
		}
	}
	if res.Connected && res.Tools != nil {
		v.ObserveTools(srv, res.Tools, "test")
	}
	return res, nil
}
