package events

import "embed"

// Schemas holds the JSON Schema (draft 2020-12) of the envelope
// (schemas/envelope.json) and of the data of every event type at every
// version it was ever written in (schemas/<type>.v<version>.json), with the
// definitions they share (schemas/defs.json). Package events/schema compiles
// and applies them; docs/events.md is generated from them.
//
//go:embed schemas/*.json
var Schemas embed.FS
