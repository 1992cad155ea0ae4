package events

import "strconv"

// TypeAuditRejected is the wire name of an operator's rejection of a stored
// event whose signature or chain link did not verify (`vaultctl audit
// reject SEQ`). The rejected event stays in the stream, marked by this one;
// the projector releases the aggregate it held at that event.
const TypeAuditRejected = "mcp.audit.rejected"

// RejectionsFilter covers every rejection.
const RejectionsFilter = SubjectPrefix + "audit.rejected.>"

// RejectionSubject is the subject of the rejection of the event at seq: one
// subject per rejected sequence, appended expecting it empty, so a sequence
// is rejected at most once and anyone (the projector, a loader) can ask
// whether a given sequence is rejected with one message get.
func RejectionSubject(seq uint64) string {
	return SubjectPrefix + "audit.rejected." + strconv.FormatUint(seq, 10)
}

// AuditRejected records that the event at Sequence (on Subject) is not part
// of the vault's history: it was not signed by the vault's audit keys, or
// its chain link did not name the event before it. The envelope's
// aggregate_id and server_id are those of the rejected subject.
type AuditRejected struct {
	Sequence uint64 `json:"sequence"`
	Subject  string `json:"subject"`
	// Problem is what verification found, e.g. "not signed".
	Problem string `json:"problem"`
	// BodySHA256 is the hex SHA-256 of the rejected message body, so the
	// rejection names exactly one message.
	BodySHA256 string `json:"body_sha256"`
}

// EventType implements Event.
func (AuditRejected) EventType() string { return TypeAuditRejected }

// SchemaVersion implements Event.
func (AuditRejected) SchemaVersion() int { return 1 }
