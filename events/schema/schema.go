// Package schema validates event messages against the JSON Schemas embedded
// in package events (events.Schemas) and renders their documentation. It is
// a separate package because events imports only the standard library.
package schema

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io/fs"
	"path"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/mcpvault/vault/events"
)

// base is the URL prefix of every schema's $id.
const base = "https://mcpvault.dev/schemas/"

var fileName = regexp.MustCompile(`^(mcp\.[a-z_]+\.[a-z_]+)\.v([0-9]+)\.json$`)

// Key names one event type at one version.
type Key struct {
	Type    string
	Version int
}

// Set is the compiled schemas: the envelope and each type at each version.
type Set struct {
	envelope *jsonschema.Schema
	data     map[Key]*jsonschema.Schema
	raw      map[Key]map[string]any
	defs     map[string]any
}

var (
	loadOnce sync.Once
	loaded   *Set
	loadErr  error
)

// Load compiles the embedded schemas once and returns them.
func Load() (*Set, error) {
	loadOnce.Do(func() { loaded, loadErr = compile(events.Schemas) })
	return loaded, loadErr
}

func compile(fsys fs.FS) (*Set, error) {
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft2020)
	files, err := fs.Glob(fsys, "schemas/*.json")
	if err != nil {
		return nil, err
	}
	s := &Set{data: map[Key]*jsonschema.Schema{}, raw: map[Key]map[string]any{}}
	docs := map[string]any{}
	for _, f := range files {
		b, err := fs.ReadFile(fsys, f)
		if err != nil {
			return nil, err
		}
		doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(b))
		if err != nil {
			return nil, fmt.Errorf("schema %s: %w", f, err)
		}
		name := path.Base(f)
		if obj, ok := doc.(map[string]any); !ok || obj["$id"] != base+name {
			return nil, fmt.Errorf("schema %s: $id must be %s", f, base+name)
		}
		if err := c.AddResource(base+name, doc); err != nil {
			return nil, fmt.Errorf("schema %s: %w", f, err)
		}
		docs[name] = doc
	}
	if s.envelope, err = c.Compile(base + "envelope.json"); err != nil {
		return nil, err
	}
	if d, ok := docs["defs.json"].(map[string]any); ok {
		s.defs, _ = d["$defs"].(map[string]any)
	}
	for name, doc := range docs {
		m := fileName.FindStringSubmatch(name)
		if m == nil {
			continue
		}
		v, _ := strconv.Atoi(m[2])
		k := Key{Type: m[1], Version: v}
		if s.data[k], err = c.Compile(base + name); err != nil {
			return nil, err
		}
		s.raw[k] = doc.(map[string]any)
		if title, _ := s.raw[k]["title"].(string); title != k.Type {
			return nil, fmt.Errorf("schema %s: title %q, want %q", name, title, k.Type)
		}
	}
	return s, nil
}

// Keys lists every type and version that has a schema, sorted.
func (s *Set) Keys() []Key {
	out := make([]Key, 0, len(s.data))
	for k := range s.data {
		out = append(out, k)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Type != out[j].Type {
			return out[i].Type < out[j].Type
		}
		return out[i].Version < out[j].Version
	})
	return out
}

// Has reports whether a schema exists for typ at version.
func (s *Set) Has(typ string, version int) bool { _, ok := s.data[Key{typ, version}]; return ok }

// Validate checks one message body: the envelope against the envelope
// schema, then data against the schema of its type and version. The error
// names the failing location, never a value.
func (s *Set) Validate(body []byte) error {
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("schema: not JSON: %w", err)
	}
	if err := s.envelope.Validate(doc); err != nil {
		return fmt.Errorf("schema: envelope: %s", brief(err))
	}
	env := doc.(map[string]any)
	typ, _ := env["type"].(string)
	ver, _ := env["version"].(json.Number)
	v, _ := strconv.Atoi(string(ver))
	sch, ok := s.data[Key{typ, v}]
	if !ok {
		return fmt.Errorf("schema: no schema for %s version %d", typ, v)
	}
	if err := sch.Validate(env["data"]); err != nil {
		return fmt.Errorf("schema: %s v%d data: %s", typ, v, brief(err))
	}
	return nil
}

// brief renders a validation error by location and rule only: values (which
// a forged event could fill with anything) are not echoed.
func brief(err error) string {
	ve, ok := err.(*jsonschema.ValidationError)
	if !ok {
		return err.Error()
	}
	var out []string
	var walk func(e *jsonschema.ValidationError)
	walk = func(e *jsonschema.ValidationError) {
		if len(e.Causes) == 0 {
			loc := "/" + strings.Join(e.InstanceLocation, "/")
			out = append(out, loc+" breaks "+path.Base(strings.Join(e.ErrorKind.KeywordPath(), "/")))
			return
		}
		for _, c := range e.Causes {
			walk(c)
		}
	}
	walk(ve)
	sort.Strings(out)
	return strings.Join(out, "; ")
}
