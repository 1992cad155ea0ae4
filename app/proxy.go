package app

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"sync"
	"time"

	"github.com/mcpvault/vault/domain"
	"github.com/mcpvault/vault/events"
	"github.com/mcpvault/vault/eventstore"
	"github.com/mcpvault/vault/projections"
	"github.com/mcpvault/vault/seal"
)

// proxyState is what the MCP endpoint keeps in the application layer.
type proxyState struct {
	uses      useQueue
	approvals approvalStore
}

// Errors of the MCP endpoint's credential checks. Each has a stable code.
var (
	// ErrCredentialRevoked: the credential was revoked; it is never sent.
	ErrCredentialRevoked = &domain.Error{Kind: domain.KindInvalid, Code: "credential_revoked",
		Message: "The credential is revoked; the vault no longer sends it. Start a new session to use another credential."}
	// ErrCredentialExpired: the credential's expires_at has passed.
	ErrCredentialExpired = &domain.Error{Kind: domain.KindInvalid, Code: "credential_expired",
		Message: "The credential has expired; the vault no longer sends it. Start a new session to use another credential."}
	// ErrCredentialDeleted: the session's credential was deleted meanwhile.
	ErrCredentialDeleted = &domain.Error{Kind: domain.KindInvalid, Code: "credential_deleted",
		Message: "The credential was deleted; the vault no longer sends it. Start a new session to use another credential."}
	// ErrCredentialUnreadable: the credential's data key is gone.
	ErrCredentialUnreadable = &domain.Error{Kind: domain.KindInvalid, Code: "credential_unreadable",
		Message: "The credential's secret can no longer be decrypted."}
)

// ProxyTarget is what the MCP endpoint needs to open an upstream session.
type ProxyTarget struct {
	Server domain.Server
	// Credential is the zero value when the server has no usable
	// credential: the session then goes upstream without one.
	Credential domain.Credential
	Secret     domain.Secret
}

// OpenProxy resolves the owner's server and the credential for a new MCP
// session: credentialID when given (it must be usable), otherwise the
// newest usable one, otherwise none. The secret is decrypted for the
// upstream connection only.
func (v *Vault) OpenProxy(ctx context.Context, owner events.Owner, serverID, credentialID string) (ProxyTarget, error) {
	if !domain.ValidServerID(serverID) {
		return ProxyTarget{}, domain.ErrServerNotFound
	}
	if credentialID != "" && !domain.ValidCredentialID(credentialID) {
		return ProxyTarget{}, domain.ErrCredentialNotFound
	}
	if err := v.Sync(ctx); err != nil {
		return ProxyTarget{}, err
	}
	var t ProxyTarget
	now := v.now()
	err := v.DB.Snapshot(ctx, func(view projections.View) error {
		var err error
		if t.Server, _, err = view.GetServer(ctx, owner, serverID); err != nil {
			if errors.Is(err, projections.ErrNotFound) {
				return domain.ErrServerNotFound
			}
			return err
		}
		if credentialID != "" {
			t.Credential, err = view.GetCredential(ctx, owner, serverID, credentialID)
			if errors.Is(err, projections.ErrNotFound) {
				return domain.ErrCredentialNotFound
			}
			return err
		}
		t.Credential, err = view.NewestUsableCredential(ctx, owner, serverID, now.Time)
		if errors.Is(err, projections.ErrNotFound) {
			t.Credential, err = domain.Credential{}, nil
		}
		return err
	})
	if err != nil {
		return ProxyTarget{}, err
	}
	if t.Credential.ID == "" {
		return t, nil
	}
	if err := unusable(t.Credential, now.Time); err != nil {
		return ProxyTarget{}, err
	}
	t.Secret, err = v.OpenSecret(ctx, t.Credential)
	switch {
	case errors.Is(err, eventstore.ErrKeyNotFound), errors.Is(err, seal.ErrDecrypt):
		return ProxyTarget{}, ErrCredentialUnreadable
	case err != nil:
		return ProxyTarget{}, ErrUnavailable
	}
	return t, nil
}

func unusable(c domain.Credential, now time.Time) error {
	switch {
	case c.Usable(now):
		return nil
	case c.Deleted:
		return ErrCredentialDeleted
	case c.RevokedAt != nil:
		return ErrCredentialRevoked
	default:
		return ErrCredentialExpired
	}
}

// ProxyCheck is what an MCP session remembers of its last check: the
// sequence its server and credential were read at, and what was read.
type ProxyCheck struct {
	seq    uint64
	server domain.Server
	cred   domain.Credential
}

// CheckProxy is run before every request of an MCP session. It asks the
// stream for the newest event on the server's subject and on the
// credential's subject (one batched request: revokes, deletes and server
// changes are there, use events are not), and when that is newer than what
// prev was read at, waits for the read model to apply it and re-reads both;
// otherwise prev still holds and only the expiry is checked again. So a
// revoke, a delete, an expiry or a change of allowed_tools or
// require_approval answered before the request applies to it, without the
// request waiting for the projector to apply unrelated events. With the
// stream unreachable it decides on the read model as every read does.
func (v *Vault) CheckProxy(ctx context.Context, owner events.Owner, serverID, credentialID string, prev *ProxyCheck) (*ProxyCheck, error) {
	var target uint64
	if st := v.Store(); st != nil {
		subjects := []string{events.ServerSubject(serverID)}
		if credentialID != "" {
			subjects = append(subjects, events.CredentialSubject(serverID, credentialID))
		}
		var err error
		if target, err = v.lastSeqOf(ctx, st, subjects); err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			target = 0
		}
	}
	now := v.now().Time
	if prev != nil && target != 0 && target <= prev.seq {
		if credentialID != "" {
			if err := unusable(prev.cred, now); err != nil {
				return nil, err
			}
		}
		return prev, nil
	}
	if target > 0 {
		if err := v.waitApplied(ctx, "", target); err != nil {
			return nil, err
		}
	}
	out := &ProxyCheck{seq: target}
	err := v.DB.Snapshot(ctx, func(view projections.View) error {
		var err error
		if out.server, _, err = view.GetServer(ctx, owner, serverID); err != nil {
			if errors.Is(err, projections.ErrNotFound) {
				return domain.ErrServerNotFound
			}
			return err
		}
		if credentialID == "" {
			return nil
		}
		out.cred, err = view.GetCredential(ctx, owner, serverID, credentialID)
		if errors.Is(err, projections.ErrNotFound) {
			return ErrCredentialDeleted
		}
		if err != nil {
			return err
		}
		return unusable(out.cred, now)
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// Server is the server as read by the check.
func (c *ProxyCheck) Server() domain.Server { return c.server }

// lastSeqOf is the store seam of CheckProxy (see app/use.go).
func (v *Vault) lastSeqOf(ctx context.Context, st *eventstore.Store, subjects []string) (uint64, error) {
	return st.LastSeqOf(ctx, subjects...)
}

// ---- approvals ---------------------------------------------------------------

// Limits of approvals.
const (
	DefaultApprovalTTL = 5 * time.Minute
	MaxApprovalTTL     = 15 * time.Minute
	maxApprovalsOwner  = 100
	maxApprovalsAll    = 100000
)

// ErrApprovalInvalid: the approval is unknown, used, expired, or for
// another owner, server, tool or arguments.
var ErrApprovalInvalid = errors.New("approval is unknown, already used, expired, or was given for another server, tool or arguments")

// ErrTooManyApprovals: the owner has too many unused approvals.
var ErrTooManyApprovals = &domain.Error{Kind: domain.KindConflict, Code: "limit_reached",
	Message: "Too many unused approvals for this owner; use or let some expire first."}

// Approval is a one-time permission for a tools/call on a server whose
// require_approval is "always". It is bound to its owner, server and tool
// and, when ArgumentsSHA256 is set, to exactly those arguments.
type Approval struct {
	ID              string
	ServerID        string
	ToolName        string
	ArgumentsSHA256 *string
	CreatedAt       events.Time
	ExpiresAt       events.Time
	owner           events.Owner
}

// approvalStore keeps unused approvals in the API process's memory.
type approvalStore struct {
	mu      sync.Mutex
	byID    map[string]Approval
	byOwner map[string]int
}

// ArgumentsHash is the hex SHA-256 of a tool call's arguments in canonical
// JSON (object keys ordered, no insignificant space); absent or null
// arguments hash as {}.
func ArgumentsHash(args json.RawMessage) (string, error) {
	var v any = map[string]any{}
	if len(args) > 0 && string(args) != "null" {
		if err := json.Unmarshal(args, &v); err != nil {
			return "", err
		}
	}
	b, err := json.Marshal(v)
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:]), nil
}

// CreateApproval issues an approval for one tools/call of tool on the
// owner's server. args nil means any arguments; ttl 0 means the default.
func (v *Vault) CreateApproval(ctx context.Context, owner events.Owner, serverID, tool string, args json.RawMessage, ttl time.Duration) (Approval, error) {
	if _, err := v.GetServer(ctx, owner, serverID); err != nil {
		return Approval{}, err
	}
	if tool == "" || len(tool) > domain.MaxToolNameLen {
		return Approval{}, domain.Invalid("tool_name", "tool_name must be 1 to 255 characters.")
	}
	switch {
	case ttl == 0:
		ttl = DefaultApprovalTTL
	case ttl < time.Second || ttl > MaxApprovalTTL:
		return Approval{}, domain.Invalid("ttl_seconds", "ttl_seconds must be from 1 to 900.")
	}
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return Approval{}, err
	}
	now := v.now()
	a := Approval{ID: "mcp_apr_" + hex.EncodeToString(b[:]), ServerID: serverID, ToolName: tool,
		CreatedAt: now, ExpiresAt: events.NewTime(now.Add(ttl)), owner: owner}
	if args != nil {
		h, err := ArgumentsHash(args)
		if err != nil {
			return Approval{}, domain.Invalid("arguments", "arguments must be a JSON object.")
		}
		a.ArgumentsSHA256 = &h
	}
	st := &v.proxy.approvals
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.byID == nil {
		st.byID, st.byOwner = map[string]Approval{}, map[string]int{}
	}
	st.prune(now.Time)
	if st.byOwner[owner.Key()] >= maxApprovalsOwner || len(st.byID) >= maxApprovalsAll {
		return Approval{}, ErrTooManyApprovals
	}
	st.byID[a.ID] = a
	st.byOwner[owner.Key()]++
	return a, nil
}

func (st *approvalStore) prune(now time.Time) {
	for id, a := range st.byID {
		if !now.Before(a.ExpiresAt.Time) {
			st.remove(id, a)
		}
	}
}

func (st *approvalStore) remove(id string, a Approval) {
	delete(st.byID, id)
	if st.byOwner[a.owner.Key()]--; st.byOwner[a.owner.Key()] <= 0 {
		delete(st.byOwner, a.owner.Key())
	}
}

// UseApproval consumes the approval id for a tools/call of tool with args
// on the owner's server: it succeeds once, within its lifetime, for exactly
// what it was issued for. A mismatch does not consume it.
func (v *Vault) UseApproval(owner events.Owner, serverID, id, tool string, args json.RawMessage) error {
	st := &v.proxy.approvals
	st.mu.Lock()
	defer st.mu.Unlock()
	a, ok := st.byID[id]
	if !ok || a.owner != owner || a.ServerID != serverID || a.ToolName != tool {
		return ErrApprovalInvalid
	}
	if !v.now().Before(a.ExpiresAt.Time) {
		st.remove(id, a)
		return ErrApprovalInvalid
	}
	if a.ArgumentsSHA256 != nil {
		h, err := ArgumentsHash(args)
		if err != nil || subtle.ConstantTimeCompare([]byte(h), []byte(*a.ArgumentsSHA256)) != 1 {
			return ErrApprovalInvalid
		}
	}
	st.remove(id, a)
	return nil
}
