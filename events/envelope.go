package events

import (
	"encoding/json"
	"fmt"
	"strings"
	"sync/atomic"
	"time"
)

// TimeLayout is the wire form of every timestamp: RFC 3339, UTC, milliseconds.
const TimeLayout = "2006-01-02T15:04:05.000Z"

// Time is a UTC instant with millisecond precision that marshals in TimeLayout.
type Time struct{ time.Time }

// NewTime truncates t to milliseconds in UTC.
func NewTime(t time.Time) Time { return Time{t.UTC().Truncate(time.Millisecond)} }

// String returns t in TimeLayout.
func (t Time) String() string { return t.UTC().Format(TimeLayout) }

// MarshalJSON implements json.Marshaler.
func (t Time) MarshalJSON() ([]byte, error) {
	return []byte(`"` + t.String() + `"`), nil
}

// UnmarshalJSON implements json.Unmarshaler; it accepts any RFC 3339 form.
func (t *Time) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	p, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return err
	}
	*t = NewTime(p)
	return nil
}

// Owner is who a server or credential belongs to: an account and, optionally,
// the end user named by X-On-Behalf-Of. It never holds an API key.
type Owner struct {
	Account string `json:"account"`
	User    string `json:"user,omitempty"`
}

// Key is a stable, unambiguous string form of the owner.
func (o Owner) Key() string { return fmt.Sprintf("%d:%s|%s", len(o.Account), o.Account, o.User) }

// Envelope is the JSON body of every message on the stream.
type Envelope struct {
	ID          string          `json:"id"`
	Type        string          `json:"type"`
	Version     int             `json:"version"`
	AggregateID string          `json:"aggregate_id"`
	ServerID    string          `json:"server_id"`
	Owner       Owner           `json:"owner"`
	OccurredAt  Time            `json:"occurred_at"`
	Data        json.RawMessage `json:"data"`
}

// Event is the data of one event type.
type Event interface {
	// EventType is the stable wire name, e.g. "mcp.credential.created".
	EventType() string
	// SchemaVersion is the version of the data's shape.
	SchemaVersion() int
}

// Meta is what an envelope carries besides the data.
type Meta struct {
	ID          string
	AggregateID string
	ServerID    string
	Owner       Owner
	OccurredAt  Time
}

// Record is a decoded event with its envelope fields and, once stored, its
// stream sequence.
type Record struct {
	Meta
	Event    Event
	Sequence uint64
}

// Encode builds the envelope for e.
func Encode(m Meta, e Event) (Envelope, error) {
	data, err := json.Marshal(e)
	if err != nil {
		return Envelope{}, err
	}
	return Envelope{
		ID: m.ID, Type: e.EventType(), Version: e.SchemaVersion(),
		AggregateID: m.AggregateID, ServerID: m.ServerID, Owner: m.Owner,
		OccurredAt: m.OccurredAt, Data: data,
	}, nil
}

// Marshal encodes e in its envelope as JSON.
func Marshal(m Meta, e Event) ([]byte, error) {
	env, err := Encode(m, e)
	if err != nil {
		return nil, err
	}
	return json.Marshal(env)
}

// Unmarshal decodes a message body into a Record, upcasting old versions.
func Unmarshal(b []byte) (Record, error) {
	var env Envelope
	if err := json.Unmarshal(b, &env); err != nil {
		return Record{}, fmt.Errorf("events: decode envelope: %w", err)
	}
	e, err := Decode(env)
	if err != nil {
		return Record{}, err
	}
	return Record{Meta: Meta{ID: env.ID, AggregateID: env.AggregateID, ServerID: env.ServerID,
		Owner: env.Owner, OccurredAt: env.OccurredAt}, Event: e}, nil
}

// Decode turns an envelope into its current-version event.
func Decode(env Envelope) (Event, error) {
	dec, ok := (*decoders.Load())[env.Type]
	if !ok {
		return nil, fmt.Errorf("events: unknown type %q", env.Type)
	}
	// All types are at version 1; an upcaster per older version goes in the
	// type's decoder, so callers only ever see the current shape.
	e, err := dec(env.Version, env.Data)
	if err != nil {
		return nil, fmt.Errorf("events: decode %s v%d: %w", env.Type, env.Version, err)
	}
	return e, nil
}

// decodeV1 decodes data of a type whose only version is 1.
func decodeV1[E Event](version int, data []byte) (Event, error) {
	var e E
	if version != e.SchemaVersion() {
		return nil, fmt.Errorf("unsupported version")
	}
	if len(data) > 0 && string(data) != "null" {
		if err := json.Unmarshal(data, &e); err != nil {
			return nil, err
		}
	}
	return e, nil
}

// Decoder turns the data of one event type at a schema version into the
// current event (upcasting older versions).
type Decoder func(version int, data []byte) (Event, error)

// decoders is the registry in use (replaced whole by RegisterDecoder).
var decoders atomic.Pointer[map[string]Decoder]

func init() { decoders.Store(&registry) }

// RegisterDecoder installs dec for wire type typ, replacing any decoder of
// that type, and returns a function restoring the previous registry. It lets
// a test play a newer build that knows an event this one does not.
func RegisterDecoder(typ string, dec Decoder) (restore func()) {
	old := decoders.Load()
	next := make(map[string]Decoder, len(*old)+1)
	for k, v := range *old {
		next[k] = v
	}
	next[typ] = dec
	decoders.Store(&next)
	return func() { decoders.Store(old) }
}

var registry = map[string]Decoder{
	TypeServerCreated:      decodeV1[ServerCreated],
	TypeServerUpdated:      decodeV1[ServerUpdated],
	TypeServerDeleted:      decodeV1[ServerDeleted],
	TypeCredentialCreated:  decodeV1[CredentialCreated],
	TypeCredentialRevoked:  decodeV1[CredentialRevoked],
	TypeCredentialDeleted:  decodeV1[CredentialDeleted],
	TypeCredentialUsed:     decodeV1[CredentialUsed],
	TypeServerToolsChanged: decodeV1[ServerToolsChanged],
}

// Types lists every wire name, for documentation and tests.
func Types() []string {
	return []string{TypeServerCreated, TypeServerUpdated, TypeServerDeleted,
		TypeCredentialCreated, TypeCredentialRevoked, TypeCredentialDeleted, TypeCredentialUsed,
		TypeServerToolsChanged}
}

// SubjectPrefix starts every event subject.
const SubjectPrefix = "vault."

// ServerSubject is the subject of a server's own events.
func ServerSubject(serverID string) string { return SubjectPrefix + serverID + ".server" }

// CredentialSubject is the subject of a credential's events.
func CredentialSubject(serverID, credentialID string) string {
	return SubjectPrefix + serverID + ".credential." + credentialID
}

// UseSubject is the subject of a credential's use events
// (mcp.credential.used). Uses have their own subject so that they never
// conflict with, nor hide, the credential's state changes (scheme v2; v1
// streams have them on the credential subject).
func UseSubject(serverID, credentialID string) string {
	return CredentialSubject(serverID, credentialID) + ".used"
}

// ServerTree is the subject filter covering a server and everything under
// it, for consumers; writes check literal subjects only.
func ServerTree(serverID string) string { return SubjectPrefix + serverID + ".>" }

// SubjectOf returns the subject an event is stored on.
func SubjectOf(r Record) string {
	switch r.Event.(type) {
	case CredentialUsed:
		return UseSubject(r.ServerID, r.AggregateID)
	}
	if strings.HasPrefix(r.AggregateID, "mcp_cred_") {
		return CredentialSubject(r.ServerID, r.AggregateID)
	}
	return ServerSubject(r.ServerID)
}
