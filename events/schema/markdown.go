package schema

import (
	"fmt"
	"sort"
	"strings"

	"github.com/mcpvault/vault/events"
)

// Generated section markers in docs/events.md.
const (
	BeginMarker = "<!-- BEGIN generated from events/schemas by `go test ./events/schema -update`; do not edit by hand -->"
	EndMarker   = "<!-- END generated -->"
)

// Markdown renders the event types from their schemas: per type its current
// version with a table of fields, then its older versions.
func (s *Set) Markdown() string {
	byType := map[string][]int{}
	for _, k := range s.Keys() {
		byType[k.Type] = append(byType[k.Type], k.Version)
	}
	order := append([]string(nil), events.Types()...)
	var extra []string
	for t := range byType {
		if !contains(order, t) {
			extra = append(extra, t)
		}
	}
	sort.Strings(extra)
	order = append(order, extra...)
	var b strings.Builder
	for _, typ := range order {
		vs := byType[typ]
		if len(vs) == 0 {
			fmt.Fprintf(&b, "### `%s`\n\nNo schema.\n\n", typ)
			continue
		}
		cur := vs[len(vs)-1]
		doc := s.raw[Key{typ, cur}]
		fmt.Fprintf(&b, "### `%s` (version %d)\n\n%s\n\n", typ, cur, str(doc["description"]))
		props, _ := doc["properties"].(map[string]any)
		if len(props) == 0 {
			b.WriteString("No fields (`data` is `{}` or null).\n\n")
		} else {
			req := map[string]bool{}
			if r, ok := doc["required"].([]any); ok {
				for _, x := range r {
					req[str(x)] = true
				}
			}
			names := make([]string, 0, len(props))
			for n := range props {
				names = append(names, n)
			}
			sort.Strings(names)
			b.WriteString("| field | type | required | meaning |\n|---|---|---|---|\n")
			for _, n := range names {
				p, _ := props[n].(map[string]any)
				typ, desc := s.describe(p)
				r := "no"
				if req[n] {
					r = "yes"
				}
				fmt.Fprintf(&b, "| `%s` | %s | %s | %s |\n", n, typ, r, strings.ReplaceAll(desc, "|", "\\|"))
			}
			b.WriteString("\n")
		}
		for _, v := range vs[:len(vs)-1] {
			fmt.Fprintf(&b, "Version %d: %s (schema `events/schemas/%s.v%d.json`)\n\n", v, str(s.raw[Key{typ, v}]["description"]), typ, v)
		}
	}
	return strings.TrimRight(b.String(), "\n") + "\n"
}

// describe returns a property's type and meaning, following a $ref into
// defs.json for what the property does not say itself.
func (s *Set) describe(p map[string]any) (string, string) {
	desc := str(p["description"])
	typ := typeOf(p)
	if ref, ok := p["$ref"].(string); ok {
		name := ref[strings.LastIndex(ref, "/")+1:]
		if d, ok := s.defs[name].(map[string]any); ok {
			if desc == "" {
				desc = str(d["description"])
			}
			if typ == "" {
				typ = typeOf(d)
			}
		}
	}
	return typ, desc
}

func typeOf(p map[string]any) string {
	switch t := p["type"].(type) {
	case string:
		return t
	case []any:
		var parts []string
		for _, x := range t {
			parts = append(parts, str(x))
		}
		return strings.Join(parts, " or ")
	}
	if _, ok := p["enum"]; ok {
		return "string (enum)"
	}
	if _, ok := p["const"]; ok {
		return "string (constant)"
	}
	if _, ok := p["anyOf"]; ok {
		return "string or null"
	}
	return ""
}

func str(v any) string { s, _ := v.(string); return s }

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// Splice replaces the generated section of doc (between BeginMarker and
// EndMarker) with gen. ok is false when the markers are missing.
func Splice(doc, gen string) (string, bool) {
	i := strings.Index(doc, BeginMarker)
	j := strings.Index(doc, EndMarker)
	if i < 0 || j < i {
		return doc, false
	}
	return doc[:i+len(BeginMarker)] + "\n\n" + gen + "\n" + doc[j:], true
}
