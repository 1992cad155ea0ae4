// Package openapi holds the OpenAPI 3.1 document of the vault's HTTP API
// (openapi.json). The API serves it at GET /openapi.json, and the end-to-end
// suite validates every response it receives against it, so the document
// cannot drift from the code.
package openapi

import _ "embed"

// Document is the OpenAPI 3.1 document, as JSON.
//
//go:embed openapi.json
var Document []byte
