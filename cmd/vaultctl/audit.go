package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/oklog/ulid/v2"
	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"

	"github.com/mcpvault/vault/audit"
	"github.com/mcpvault/vault/events"
	"github.com/mcpvault/vault/events/schema"
	"github.com/mcpvault/vault/eventstore"
)

// connect dials NATS as role (the identity config.NATS finds: the role's
// URL written by `vault run`, or VAULT_NATS_URL with VAULT_NATS_USER) and
// binds to the event stream read-only.
func (c *cli) connect(ctx context.Context, role string) (*nats.Conn, *eventstore.Reader, error) {
	url, auth, err := c.cfg.NATS(role)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %v", errUnreachable, err)
	}
	auth.FailFast = true
	if role == eventstore.RoleAudit {
		auth.Role = "" // the audit user replies on the default inbox (deploy/nats)
	}
	nc, err := eventstore.Dial(url, "vaultctl-"+role, auth)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %v", errUnreachable, err)
	}
	bctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	r, err := eventstore.NewReader(bctx, nc, c.cfg.Stream)
	if err != nil {
		nc.Close()
		return nil, nil, err
	}
	return nc, r, nil
}

func newFlags(name string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	return fs
}

func parse(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		return usageError{fs.Name() + ": " + err.Error()}
	}
	return nil
}

// line is what tail prints per event (the JSON form with --json).
type line struct {
	Seq         uint64       `json:"seq"`
	Subject     string       `json:"subject"`
	StoredAt    string       `json:"stored_at"`
	ID          string       `json:"id,omitempty"`
	Type        string       `json:"type,omitempty"`
	Version     int          `json:"version,omitempty"`
	AggregateID string       `json:"aggregate_id,omitempty"`
	ServerID    string       `json:"server_id,omitempty"`
	Owner       events.Owner `json:"owner"`
	OccurredAt  string       `json:"occurred_at,omitempty"`
	SignedBy    string       `json:"signed_by,omitempty"`
}

func toLine(s eventstore.Stored) line {
	var env events.Envelope
	_ = json.Unmarshal(s.Data, &env) // a body that is no envelope still gets a line
	l := line{Seq: s.Seq, Subject: s.Subject, StoredAt: events.NewTime(s.Time).String(), ID: env.ID, Type: env.Type,
		Version: env.Version, AggregateID: env.AggregateID, ServerID: env.ServerID, Owner: env.Owner,
		SignedBy: s.Header.Get(audit.HeaderKID)}
	if !env.OccurredAt.IsZero() {
		l.OccurredAt = env.OccurredAt.String()
	}
	return l
}

func (l line) text() string {
	typ := l.Type
	if typ == "" {
		typ = "(not an event envelope)"
	}
	owner := "account=" + quoteIfNeeded(l.Owner.Account)
	if l.Owner.User != "" {
		owner += " user=" + quoteIfNeeded(l.Owner.User)
	}
	signed := "unsigned"
	if l.SignedBy != "" {
		signed = "signed=" + l.SignedBy
	}
	return fmt.Sprintf("%d %s %s %s %s %s", l.Seq, orDash(l.OccurredAt), typ, orDash(l.AggregateID), owner, signed)
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func quoteIfNeeded(s string) string {
	if s == "" || strings.ContainsAny(s, " \t\"=\\") || !strconv.CanBackquote(s) {
		return strconv.Quote(s)
	}
	return s
}

// parseSince reads SEQ, an RFC 3339 time, or a duration ago ("1h").
func parseSince(s string, now time.Time) (uint64, time.Time, error) {
	if s == "" {
		return 0, time.Time{}, nil
	}
	if n, err := strconv.ParseUint(s, 10, 64); err == nil && n > 0 {
		return n, time.Time{}, nil
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return 0, t, nil
	}
	if d, err := time.ParseDuration(s); err == nil && d > 0 {
		return 0, now.Add(-d), nil
	}
	return 0, time.Time{}, usageError{"--since: want a sequence (≥ 1), an RFC 3339 time or a duration such as 1h"}
}

func (c *cli) auditTail(ctx context.Context, args []string) error {
	fs := newFlags("audit tail")
	since := fs.String("since", "", "")
	owner := fs.String("owner", "", "")
	name := fs.String("name", "vaultctl-tail", "")
	once := fs.Bool("once", false, "")
	if err := parse(fs, args); err != nil {
		return err
	}
	seq, at, err := parseSince(*since, time.Now())
	if err != nil {
		return err
	}
	if strings.ContainsAny(*name, ".*> \t") || *name == "" {
		return usageError{"--name: a consumer name without dots, wildcards or spaces"}
	}
	var want *events.Owner
	if *owner != "" {
		acct, user, _ := strings.Cut(*owner, ":")
		want = &events.Owner{Account: acct, User: user}
	}
	nc, r, err := c.connect(ctx, "audit")
	if err != nil {
		return err
	}
	defer nc.Close()
	out := bufio.NewWriter(c.stdout)
	return r.Tail(ctx, eventstore.TailOptions{Durable: *name, StartSeq: seq, StartTime: at, StopAtEnd: *once},
		func(batch []eventstore.Stored) error {
			for _, s := range batch {
				l := toLine(s)
				if want != nil && (l.Owner.Account != want.Account || (want.User != "" && l.Owner.User != want.User)) {
					continue
				}
				if c.json {
					b, _ := json.Marshal(l)
					out.Write(append(b, '\n'))
				} else {
					out.WriteString(l.text() + "\n")
				}
			}
			// Written before the batch is acknowledged.
			return out.Flush()
		})
}

func (c *cli) auditKeys(args []string) error {
	if len(args) > 0 {
		return usageError{"audit keys takes no arguments"}
	}
	kr, err := c.cfg.AuditVerifyKeys()
	if err != nil {
		return err
	}
	if c.json {
		c.emit(map[string]string{"VAULT_AUDIT_PUBLIC_KEYS": kr.PublicSpec(), "active_kid": kr.ActiveKID()})
		return nil
	}
	fmt.Fprintf(c.stdout, "VAULT_AUDIT_PUBLIC_KEYS=%s\n", kr.PublicSpec())
	return nil
}

// breakReport is one event that does not verify.
type breakReport struct {
	Seq      uint64 `json:"seq"`
	Subject  string `json:"subject"`
	Problem  string `json:"problem"`
	Rejected bool   `json:"rejected"`
}

// verifyResult is the outcome of a walk.
type verifyResult struct {
	OK       bool          `json:"ok"`
	Checked  uint64        `json:"checked"`
	LastSeq  uint64        `json:"last_seq"`
	Signed   uint64        `json:"signed"`
	Breaks   []breakReport `json:"breaks"`
	Rejected []breakReport `json:"rejected"`
	Invalid  []breakReport `json:"schema_invalid"`
}

// rejection is a verified mcp.audit.rejected event.
type rejection struct {
	seq  uint64 // of the rejection itself
	body string // sha256 of the rejected body
}

// rejections reads every validly signed rejection (sequence rejected → rejection).
func rejections(ctx context.Context, r *eventstore.Reader, kr *audit.Keyring) (map[uint64]rejection, error) {
	out := map[uint64]rejection{}
	err := r.Walk(ctx, 1, events.RejectionsFilter, func(s eventstore.Stored) error {
		if _, err := kr.VerifySignature(s.Subject, s.Data, s.Header); err != nil {
			return nil // a forged rejection rejects nothing (and is itself a break)
		}
		rec, err := events.Unmarshal(s.Data)
		if err != nil {
			return nil
		}
		if e, ok := rec.Event.(events.AuditRejected); ok {
			if _, dup := out[e.Sequence]; !dup {
				out[e.Sequence] = rejection{seq: s.Seq, body: e.BodySHA256}
			}
		}
		return nil
	})
	return out, err
}

// verify walks the stream up to upTo (0 = its end) with the checker.
func verify(ctx context.Context, r *eventstore.Reader, kr *audit.Keyring, unsignedUntil, upTo uint64, all bool, progress func(uint64, uint64)) (verifyResult, error) {
	res := verifyResult{Breaks: []breakReport{}, Rejected: []breakReport{}, Invalid: []breakReport{}}
	rej, err := rejections(ctx, r, kr)
	if err != nil {
		return res, err
	}
	last, err := r.LastSeq(ctx)
	if err != nil {
		return res, err
	}
	if upTo == 0 || upTo > last {
		upTo = last
	}
	schemas, err := schema.Load()
	if err != nil {
		return res, err
	}
	chk := &audit.Checker{Keys: kr, UnsignedUntil: unsignedUntil}
	errStop := errors.New("stop")
	err = r.Walk(ctx, 1, "", func(s eventstore.Stored) error {
		if s.Seq > upTo {
			return errStop
		}
		res.Checked++
		res.LastSeq = s.Seq
		if s.Header.Get(audit.HeaderSig) != "" {
			res.Signed++
		}
		if progress != nil {
			progress(s.Seq, upTo)
		}
		if err := chk.Check(s.Seq, s.Subject, s.Data, s.Header); err != nil {
			var b *audit.Break
			if !errors.As(err, &b) {
				return err
			}
			br := breakReport{Seq: s.Seq, Subject: s.Subject, Problem: b.Err.Error()}
			if rj, ok := rej[s.Seq]; ok && rj.body == audit.Hash(s.Data) {
				br.Rejected = true
				res.Rejected = append(res.Rejected, br)
				return nil
			}
			res.Breaks = append(res.Breaks, br)
			if !all {
				return errStop
			}
			return nil
		}
		if err := schemas.Validate(s.Data); err != nil {
			// Signed by the vault but outside its schemas: a bug, not a forgery.
			res.Invalid = append(res.Invalid, breakReport{Seq: s.Seq, Subject: s.Subject, Problem: err.Error()})
		}
		return nil
	})
	if err != nil && !errors.Is(err, errStop) {
		return res, err
	}
	res.OK = len(res.Breaks) == 0
	return res, nil
}

func (c *cli) progressBar(desc string) (func(n, total uint64), func()) {
	f, ok := c.stderr.(*os.File)
	if !ok || !term.IsTerminal(int(f.Fd())) {
		return nil, func() {}
	}
	var bar *progressbar.ProgressBar
	return func(n, total uint64) {
			if bar == nil {
				bar = progressbar.NewOptions64(int64(total), progressbar.OptionSetWriter(f), progressbar.OptionSetDescription(desc),
					progressbar.OptionShowCount(), progressbar.OptionShowIts(), progressbar.OptionThrottle(100*time.Millisecond),
					progressbar.OptionFullWidth())
			}
			bar.Set64(int64(n))
		}, func() {
			if bar != nil {
				bar.Finish()
				fmt.Fprintln(f)
			}
		}
}

func (c *cli) auditVerify(ctx context.Context, args []string) error {
	fs := newFlags("audit verify")
	def, err := c.cfg.UnsignedUntil()
	if err != nil {
		return err
	}
	unsigned := fs.Uint64("unsigned-until", def, "")
	all := fs.Bool("all", false, "")
	if err := parse(fs, args); err != nil {
		return err
	}
	kr, err := c.cfg.AuditVerifyKeys()
	if err != nil {
		return err
	}
	nc, r, err := c.connect(ctx, "audit")
	if err != nil {
		return err
	}
	defer nc.Close()
	prog, done := c.progressBar("verifying")
	res, err := verify(ctx, r, kr, *unsigned, 0, *all, prog)
	done()
	if err != nil {
		return err
	}
	if c.json {
		c.emit(res)
	} else {
		for _, b := range res.Rejected {
			fmt.Fprintf(c.stdout, "rejected  sequence %d on %s: %s (marked by a signed rejection)\n", b.Seq, b.Subject, b.Problem)
		}
		for _, b := range res.Invalid {
			fmt.Fprintf(c.stdout, "warning   sequence %d on %s: %s\n", b.Seq, b.Subject, b.Problem)
		}
		for _, b := range res.Breaks {
			fmt.Fprintf(c.stdout, "BREAK     sequence %d on %s: %s\n", b.Seq, b.Subject, b.Problem)
		}
		if res.OK {
			fmt.Fprintf(c.stdout, "ok: %d events verified up to sequence %d (%d signed, %d rejected)\n", res.Checked, res.LastSeq, res.Signed, len(res.Rejected))
		}
	}
	if !res.OK {
		return problemError{fmt.Sprintf("break at sequence %d", res.Breaks[0].Seq)}
	}
	return nil
}

// aggregateOf parses the aggregate of an event subject
// (vault.<srv>.server, vault.<srv>.credential.<cred>[.used]).
func aggregateOf(subject string) (serverID, aggregateID string) {
	p := strings.Split(subject, ".")
	if len(p) >= 3 && p[0] == "vault" && strings.HasPrefix(p[1], "mcp_srv_") {
		if len(p) >= 4 && p[2] == "credential" && strings.HasPrefix(p[3], "mcp_cred_") {
			return p[1], p[3]
		}
		return p[1], p[1]
	}
	const none = "mcp_srv_00000000000000000000000000000000"
	return none, none
}

func (c *cli) auditReject(ctx context.Context, args []string) error {
	if len(args) != 1 {
		return usageError{"audit reject takes one sequence"}
	}
	seq, err := strconv.ParseUint(args[0], 10, 64)
	if err != nil || seq == 0 {
		return usageError{"audit reject: want a sequence ≥ 1"}
	}
	kr, _, err := c.cfg.AuditKeys()
	if err != nil {
		return err
	}
	nc, r, err := c.connect(ctx, "api")
	if err != nil {
		return err
	}
	defer nc.Close()
	res, err := verify(ctx, r, kr, 0, seq, true, nil)
	if err != nil {
		return err
	}
	var target *breakReport
	for i := range res.Breaks {
		if res.Breaks[i].Seq == seq {
			target = &res.Breaks[i]
		}
	}
	for _, b := range res.Rejected {
		if b.Seq == seq {
			if c.json {
				c.emit(map[string]any{"rejected": seq, "already": true})
			} else {
				fmt.Fprintf(c.stdout, "sequence %d is already rejected\n", seq)
			}
			return nil
		}
	}
	if target == nil {
		return problemError{fmt.Sprintf("sequence %d verifies; only a break can be rejected", seq)}
	}
	m, err := r.Get(ctx, seq)
	if err != nil {
		return err
	}
	srv, agg := aggregateOf(m.Subject)
	now := events.NewTime(time.Now())
	id := ulid.MustNew(ulid.Timestamp(now.Time), rand.Reader).String()
	body, err := events.Marshal(events.Meta{ID: id, AggregateID: agg, ServerID: srv, Owner: events.Owner{Account: "operator"}, OccurredAt: now},
		events.AuditRejected{Sequence: seq, Subject: m.Subject, Problem: target.Problem, BodySHA256: audit.Hash(m.Data)})
	if err != nil {
		return err
	}
	subject := events.RejectionSubject(seq)
	h := kr.Sign(subject, body, audit.Unchained)
	h["Nats-Expected-Last-Subject-Sequence"] = "0" // at most one rejection per sequence
	at, err := r.Publish(ctx, subject, body, h, "reject-"+strconv.FormatUint(seq, 10))
	if err != nil {
		return err
	}
	if c.json {
		c.emit(map[string]any{"rejected": seq, "rejection_seq": at, "problem": target.Problem})
	} else {
		fmt.Fprintf(c.stdout, "rejected sequence %d (%s) with the signed event at sequence %d\n", seq, target.Problem, at)
	}
	return nil
}
