package vaulttest

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/pb33f/libopenapi"
	validator "github.com/pb33f/libopenapi-validator"
	"github.com/pb33f/libopenapi-validator/config"
	liberrors "github.com/pb33f/libopenapi-validator/errors"
	"github.com/pb33f/libopenapi-validator/schema_validation"
	"github.com/pb33f/libopenapi/datamodel/high/base"

	"github.com/mcpvault/vault/openapi"
)

// contract is the OpenAPI document loaded once for every test of the binary.
var contract struct {
	once     sync.Once
	err      error
	v        validator.Validator // safe for concurrent use (its caches are)
	errorDoc *base.Schema        // components.schemas.Error
	schemas  schema_validation.SchemaValidator
}

func loadContract() {
	doc, err := libopenapi.NewDocument(openapi.Document)
	if err != nil {
		contract.err = err
		return
	}
	model, err := doc.BuildV3Model()
	if err != nil {
		contract.err = err
		return
	}
	opts := []config.Option{config.WithFormatAssertions()}
	v, errs := validator.NewValidator(doc, opts...)
	if len(errs) > 0 {
		contract.err = fmt.Errorf("openapi validator: %v", errs)
		return
	}
	if ok, verrs := v.ValidateDocument(); !ok {
		contract.err = fmt.Errorf("openapi.json is not a valid OpenAPI document: %s", describe(verrs))
		return
	}
	proxy := model.Model.Components.Schemas.GetOrZero("Error")
	if proxy == nil {
		contract.err = fmt.Errorf("openapi.json has no Error schema")
		return
	}
	contract.v = v
	contract.errorDoc = proxy.Schema()
	contract.schemas = schema_validation.NewSchemaValidator(opts...)
}

// CheckContract fails tb unless the answer (status, headers, body) to req is
// one that openapi/openapi.json allows, validated by libopenapi-validator.
// An answer to a path or method the document does not name (an unknown
// route) must be a 404 with the Error body.
func CheckContract(tb testing.TB, req *http.Request, status int, header http.Header, body []byte) {
	tb.Helper()
	if err := ContractError(req, status, header, body); err != nil {
		tb.Errorf("answer breaks the OpenAPI contract: %v", err)
	}
}

// ContractError is CheckContract returning the mismatch instead.
func ContractError(req *http.Request, status int, header http.Header, body []byte) error {
	contract.once.Do(loadContract)
	if contract.err != nil {
		return contract.err
	}
	resp := &http.Response{StatusCode: status, Header: header, Body: io.NopCloser(bytes.NewReader(body)), Request: req}
	ok, errs := contract.v.ValidateHttpResponse(req, resp)
	if ok {
		return nil
	}
	if unknownRoute(errs) {
		if status != http.StatusNotFound {
			return fmt.Errorf("%s %s is not in the document and was answered %d, not 404", req.Method, req.URL.Path, status)
		}
		if ok, serrs := contract.schemas.ValidateSchemaBytes(contract.errorDoc, body); !ok {
			return fmt.Errorf("%s %s: 404 body is not an Error: %s", req.Method, req.URL.Path, describe(serrs))
		}
		return nil
	}
	return fmt.Errorf("%s %s → %d: %s (body %.300s)", req.Method, req.URL.Path, status, describe(errs), body)
}

func unknownRoute(errs []*liberrors.ValidationError) bool {
	if len(errs) == 0 {
		return false
	}
	for _, e := range errs {
		if !e.IsPathMissingError() && !e.IsOperationMissingError() {
			return false
		}
	}
	return true
}

func describe(errs []*liberrors.ValidationError) string {
	var b strings.Builder
	for i, e := range errs {
		if i > 0 {
			b.WriteString("; ")
		}
		b.WriteString(e.Message)
		if e.Reason != "" {
			b.WriteString(": " + e.Reason)
		}
		for _, s := range e.SchemaValidationErrors {
			fmt.Fprintf(&b, " [%s: %s]", s.FieldPath, s.Reason)
		}
	}
	return b.String()
}

// CheckAcceptedRequest fails tb unless req (sent with body) is a request
// the OpenAPI document accepts: for a request the API answered with 2xx, a
// stricter document would be wrong about the API.
func CheckAcceptedRequest(tb testing.TB, req *http.Request, body []byte) {
	tb.Helper()
	if err := RequestError(req, body); err != nil {
		tb.Errorf("an accepted request breaks the OpenAPI contract: %v", err)
	}
}

// RequestError is CheckAcceptedRequest returning the mismatch instead.
func RequestError(req *http.Request, body []byte) error {
	contract.once.Do(loadContract)
	if contract.err != nil {
		return contract.err
	}
	r := req.Clone(req.Context())
	r.Body = io.NopCloser(bytes.NewReader(body))
	if ok, errs := contract.v.ValidateHttpRequestSync(r); !ok {
		return fmt.Errorf("%s %s: %s (body %.300s)", req.Method, req.URL.Path, describe(errs), body)
	}
	return nil
}
