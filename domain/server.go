package domain

import (
	"maps"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/mcpvault/vault/events"
)

// Server is the folded state of one MCP server.
type Server struct {
	ID    string
	Owner events.Owner
	events.ServerAttrs
	CreatedAt events.Time
	UpdatedAt events.Time
	// ToolsChangedAt is when the vault last saw the server's tools drift
	// from the inventory it had recorded (nil: never).
	ToolsChangedAt *events.Time
	Deleted        bool
	// Version is the stream sequence of the server's last event on its
	// own subject: the expectation of its next write, and of every
	// credential created on it.
	Version uint64
}

// ServerPatch is the request to create or change a server. In a create, the
// absent fields take their defaults; in an update, only present fields change.
type ServerPatch struct {
	Name              Field[string]
	ServerLabel       Field[string]
	ServerURL         Field[string]
	ServerDescription Field[string]
	AllowedTools      Field[[]string]
	RequireApproval   Field[string]
	Metadata          Field[map[string]string]
}

// Limits of the server attributes.
const (
	MaxNameLen         = 255
	MaxURLLen          = 2048
	MaxDescriptionLen  = 10000
	MaxAllowedTools    = 1000
	MaxToolNameLen     = 255
	MaxMetadataPairs   = 16
	MaxMetadataKeyLen  = 64
	MaxMetadataValLen  = 512
	RequireAlways      = "always"
	RequireNever       = "never"
	defaultRequirement = RequireAlways
)

var labelRE = regexp.MustCompile(`^[A-Za-z0-9._-]+$`)

// ApplyServer is the fold of the server aggregate: the state after r.
// It is pure; time comes from the envelope.
func ApplyServer(s Server, r events.Record) Server {
	switch e := r.Event.(type) {
	case events.ServerCreated:
		s = Server{ID: r.AggregateID, Owner: r.Owner, ServerAttrs: cloneAttrs(e.ServerAttrs),
			CreatedAt: r.OccurredAt, UpdatedAt: r.OccurredAt}
	case events.ServerUpdated:
		s.ServerAttrs = cloneAttrs(e.ServerAttrs)
		s.UpdatedAt = r.OccurredAt
	case events.ServerDeleted:
		s.Deleted = true
		s.UpdatedAt = r.OccurredAt
	case events.ServerToolsChanged:
		// A fact observed upstream, not a change of the server's settings:
		// updated_at stays; the first inventory recorded is no drift.
		if !e.Initial {
			t := r.OccurredAt
			s.ToolsChangedAt = &t
		}
	}
	if r.Sequence > 0 {
		s.Version = r.Sequence
	}
	return s
}

func cloneAttrs(a events.ServerAttrs) events.ServerAttrs {
	a.AllowedTools = slices.Clone(a.AllowedTools)
	a.Metadata = maps.Clone(a.Metadata)
	if a.Metadata == nil {
		a.Metadata = map[string]string{}
	}
	return a
}

// CreateServer decides the registration of a server with the given id.
func CreateServer(owner events.Owner, id string, p ServerPatch, now events.Time) (Server, []events.Record, error) {
	for _, f := range []struct {
		name string
		set  bool
	}{{"name", p.Name.Set}, {"server_label", p.ServerLabel.Set}, {"server_url", p.ServerURL.Set}} {
		if !f.set {
			return Server{}, nil, Invalid(f.name, "Missing required parameter: '"+f.name+"'.")
		}
	}
	attrs := events.ServerAttrs{RequireApproval: defaultRequirement, Metadata: map[string]string{}}
	if _, err := p.apply(&attrs); err != nil {
		return Server{}, nil, err
	}
	rec := events.Record{Meta: events.Meta{AggregateID: id, ServerID: id, Owner: owner, OccurredAt: now},
		Event: events.ServerCreated{ServerAttrs: attrs}}
	return ApplyServer(Server{}, rec), []events.Record{rec}, nil
}

// UpdateServer decides a partial change. A patch that changes nothing
// records nothing and returns the state as it is.
func UpdateServer(s Server, p ServerPatch, now events.Time) (Server, []events.Record, error) {
	if s.ID == "" || s.Deleted {
		return Server{}, nil, ErrServerNotFound
	}
	attrs := cloneAttrs(s.ServerAttrs)
	changed, err := p.apply(&attrs)
	if err != nil {
		return Server{}, nil, err
	}
	if len(changed) == 0 {
		return s, nil, nil
	}
	rec := events.Record{Meta: events.Meta{AggregateID: s.ID, ServerID: s.ID, Owner: s.Owner, OccurredAt: now},
		Event: events.ServerUpdated{ChangedFields: changed, ServerAttrs: attrs}}
	return ApplyServer(s, rec), []events.Record{rec}, nil
}

// DeleteServer decides the deletion of a server and of the given credentials,
// which must be every credential the server has.
func DeleteServer(s Server, credentialIDs []string, now events.Time) (Server, []events.Record, error) {
	if s.ID == "" || s.Deleted {
		return Server{}, nil, ErrServerNotFound
	}
	ids := slices.Clone(credentialIDs)
	slices.Sort(ids)
	if ids == nil {
		ids = []string{}
	}
	rec := events.Record{Meta: events.Meta{AggregateID: s.ID, ServerID: s.ID, Owner: s.Owner, OccurredAt: now},
		Event: events.ServerDeleted{CredentialIDs: ids}}
	return ApplyServer(s, rec), []events.Record{rec}, nil
}

// apply checks every present field of p and writes it into a, returning the
// names of the fields whose value changed.
func (p ServerPatch) apply(a *events.ServerAttrs) ([]string, error) {
	var changed []string
	mark := func(name string, differs bool) {
		if differs {
			changed = append(changed, name)
		}
	}
	if p.Name.Set {
		if err := checkString("name", p.Name, 1, MaxNameLen); err != nil {
			return nil, err
		}
		mark("name", a.Name != p.Name.V)
		a.Name = p.Name.V
	}
	if p.ServerLabel.Set {
		if err := checkString("server_label", p.ServerLabel, 1, MaxNameLen); err != nil {
			return nil, err
		}
		if !labelRE.MatchString(p.ServerLabel.V) {
			return nil, Invalid("server_label", "server_label may contain only letters, digits, '.', '_' and '-'.")
		}
		mark("server_label", a.ServerLabel != p.ServerLabel.V)
		a.ServerLabel = p.ServerLabel.V
	}
	if p.ServerURL.Set {
		if err := checkServerURL(p.ServerURL); err != nil {
			return nil, err
		}
		mark("server_url", a.ServerURL != p.ServerURL.V)
		a.ServerURL = p.ServerURL.V
	}
	if p.ServerDescription.Set {
		var v *string
		if !p.ServerDescription.Null {
			if err := checkString("server_description", p.ServerDescription, 0, MaxDescriptionLen); err != nil {
				return nil, err
			}
			s := p.ServerDescription.V
			v = &s
		}
		mark("server_description", !equalPtr(a.ServerDescription, v))
		a.ServerDescription = v
	}
	if p.AllowedTools.Set {
		var v []string
		if !p.AllowedTools.Null {
			if err := checkTools(p.AllowedTools.V); err != nil {
				return nil, err
			}
			v = slices.Clone(p.AllowedTools.V)
			if v == nil {
				v = []string{}
			}
		}
		mark("allowed_tools", (a.AllowedTools == nil) != (v == nil) || !slices.Equal(a.AllowedTools, v))
		a.AllowedTools = v
	}
	if p.RequireApproval.Set {
		if p.RequireApproval.Null || (p.RequireApproval.V != RequireAlways && p.RequireApproval.V != RequireNever) {
			return nil, Invalid("require_approval", "require_approval must be 'always' or 'never'.")
		}
		mark("require_approval", a.RequireApproval != p.RequireApproval.V)
		a.RequireApproval = p.RequireApproval.V
	}
	if p.Metadata.Set {
		if p.Metadata.Null {
			return nil, Invalid("metadata", "metadata cannot be null; send {} to clear it.")
		}
		if err := checkMetadata(p.Metadata.V); err != nil {
			return nil, err
		}
		v := maps.Clone(p.Metadata.V)
		if v == nil {
			v = map[string]string{}
		}
		mark("metadata", !maps.Equal(a.Metadata, v))
		a.Metadata = v
	}
	return changed, nil
}

func equalPtr[T comparable](a, b *T) bool {
	if a == nil || b == nil {
		return a == b
	}
	return *a == *b
}

// checkString enforces a non-null string of min..max characters.
func checkString(param string, f Field[string], min, max int) error {
	if f.Null {
		return Invalid(param, param+" cannot be null.")
	}
	n := utf8.RuneCountInString(f.V)
	if !utf8.ValidString(f.V) {
		return Invalid(param, param+" must be valid UTF-8.")
	}
	if n < min {
		if min == 1 {
			return Invalid(param, param+" must not be empty.")
		}
		return Invalid(param, param+" is too short.")
	}
	if n > max {
		return Invalid(param, param+" must be at most "+strconv.Itoa(max)+" characters.")
	}
	return nil
}

func checkServerURL(f Field[string]) error {
	if err := checkString("server_url", f, 1, MaxURLLen); err != nil {
		return err
	}
	u, err := url.Parse(f.V)
	if err != nil || !u.IsAbs() || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.Hostname() == "" {
		return Invalid("server_url", "server_url must be an absolute http or https URL.")
	}
	if p := u.Port(); p != "" {
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			return Invalid("server_url", "server_url has an invalid port.")
		}
	}
	if strings.ContainsAny(f.V, " \t\r\n") {
		return Invalid("server_url", "server_url must not contain whitespace; percent-encode it.")
	}
	if u.User != nil {
		return Invalid("server_url", "server_url must not contain credentials; store them as a credential.")
	}
	if u.Fragment != "" || strings.HasSuffix(f.V, "#") {
		return Invalid("server_url", "server_url must not contain a fragment.")
	}
	return nil
}

func checkTools(tools []string) error {
	if len(tools) > MaxAllowedTools {
		return Invalid("allowed_tools", "allowed_tools may list at most "+strconv.Itoa(MaxAllowedTools)+" tools.")
	}
	seen := make(map[string]struct{}, len(tools))
	for _, t := range tools {
		if err := checkString("allowed_tools", Value(t), 1, MaxToolNameLen); err != nil {
			return Invalid("allowed_tools", "Each tool name in allowed_tools must be 1 to 255 characters.")
		}
		if _, dup := seen[t]; dup {
			return Invalid("allowed_tools", "allowed_tools lists '"+t+"' more than once.")
		}
		seen[t] = struct{}{}
	}
	return nil
}

func checkMetadata(m map[string]string) error {
	if len(m) > MaxMetadataPairs {
		return Invalid("metadata", "metadata may hold at most 16 pairs.")
	}
	for k, v := range m {
		if n := utf8.RuneCountInString(k); n < 1 || n > MaxMetadataKeyLen || !utf8.ValidString(k) {
			return Invalid("metadata", "metadata keys must be 1 to 64 characters.")
		}
		if utf8.RuneCountInString(v) > MaxMetadataValLen || !utf8.ValidString(v) {
			return Invalid("metadata", "metadata values must be at most 512 characters.")
		}
	}
	return nil
}
