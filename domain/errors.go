package domain

import "errors"

// Kind classifies a domain error; the HTTP adapter maps each kind to a status
// in exactly one table.
type Kind int

// The kinds of domain error.
const (
	KindInvalid     Kind = iota + 1 // a rule is broken: 400
	KindNotFound                    // unknown or foreign: 404
	KindConflict                    // a concurrent change won: 409
	KindUnavailable                 // the vault cannot serve this now; nothing was stored: 503
)

// Error is the one error shape of the domain.
type Error struct {
	Kind    Kind
	Param   string // the request field at fault, if any
	Code    string // a stable machine-readable code, if any
	Message string
}

func (e *Error) Error() string { return e.Message }

// Invalid returns a KindInvalid error about param.
func Invalid(param, msg string) *Error { return &Error{Kind: KindInvalid, Param: param, Message: msg} }

// ErrServerNotFound is returned for an unknown, deleted or foreign server.
var ErrServerNotFound = &Error{Kind: KindNotFound, Message: "No such MCP server."}

// ErrCredentialNotFound is returned for an unknown, deleted or foreign credential.
var ErrCredentialNotFound = &Error{Kind: KindNotFound, Message: "No such MCP credential."}

// ErrConflict is returned when a concurrent change to the same server or
// credential kept winning.
var ErrConflict = &Error{Kind: KindConflict, Code: "concurrent_modification",
	Message: "A concurrent change to this resource won; retry the request."}

// KindOf returns the kind of err, or 0 when err is not a domain error.
func KindOf(err error) Kind {
	var e *Error
	if errors.As(err, &e) {
		return e.Kind
	}
	return 0
}
