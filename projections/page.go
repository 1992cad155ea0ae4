package projections

import (
	"context"
	"database/sql"
	"errors"
	"slices"
)

// Page selects one page of a list ordered by id (= creation time).
type Page struct {
	Limit  int
	Desc   bool
	After  string // the page that follows this id in the requested order
	Before string // the page just before this id, still in the requested order
}

// pageQuery completes base (which ends in a WHERE clause) for one page in
// the requested order, one row more than the page (whether more lie beyond
// it); backwards says the rows come in reverse order (a page before a
// cursor).
func pageQuery(base string, args []any, p Page) (string, []any, bool) {
	// Walking backwards (before) reverses the scan direction, then the page.
	backwards := p.Before != ""
	scanDesc := p.Desc != backwards
	cursor := p.After
	if backwards {
		cursor = p.Before
	}
	sqlText, args := base, slices.Clone(args)
	if cursor != "" {
		if scanDesc {
			sqlText += " AND id < +?"
		} else {
			sqlText += " AND id > +?"
		}
		args = append(args, cursor)
	}
	if scanDesc {
		sqlText += " ORDER BY id DESC"
	} else {
		sqlText += " ORDER BY id ASC"
	}
	return sqlText + " LIMIT +?", append(args, p.Limit+1), backwards
}

// page runs base (which ends in a WHERE clause) for one page in the requested
// order, and reports whether more items lie beyond the page in the direction
// of travel.
func page[T any](ctx context.Context, q querier, base string, args []any, p Page, scan func(scanner) (T, error)) ([]T, bool, error) {
	sqlText, args, backwards := pageQuery(base, args, p)
	rows, err := q.QueryContext(ctx, sqlText, args...)
	if err != nil {
		return nil, false, err
	}
	defer rows.Close()
	out := make([]T, 0, p.Limit)
	more := false
	for rows.Next() {
		if len(out) == p.Limit {
			more = true
			break
		}
		v, err := scan(rows)
		if err != nil {
			return nil, false, err
		}
		out = append(out, v)
	}
	if err := rows.Err(); err != nil {
		return nil, false, err
	}
	if backwards {
		slices.Reverse(out)
	}
	return out, more, nil
}

// DocPage is one page of objects as the API sends them (the read model
// stores each one's JSON, projections/credential.go).
type DocPage struct {
	// Data is the caller's buffer with the page's objects appended,
	// comma-separated, in the requested order.
	Data            []byte
	N               int
	FirstID, LastID string // of the first and last object on the page ("" when empty)
	More            bool   // more lie beyond the page in the direction of travel
}

// errNoStoredObject: docPage met a row stored without its object.
var errNoStoredObject = errors.New("projections: a row has no stored object")

// docPage runs base, which selects id and doc, for one page appended to dst
// (errNoStoredObject when a row has none: the caller renders the page from
// its columns, after this query's connection is released).
func docPage(ctx context.Context, q querier, base string, args []any, p Page, dst []byte) (DocPage, error) {
	sqlText, args, backwards := pageQuery(base, args, p)
	rows, err := q.QueryContext(ctx, sqlText, args...)
	if err != nil {
		return DocPage{}, err
	}
	defer rows.Close()
	out := DocPage{Data: dst}
	var (
		id, doc sql.RawBytes
		last    []byte // the id of the last row read
		ends    []int  // backwards: where each object ends in rev
		rev     []byte
	)
	for rows.Next() {
		if out.N == p.Limit {
			out.More = true
			break
		}
		if err := rows.Scan(&id, &doc); err != nil {
			return DocPage{}, err
		}
		if len(doc) == 0 {
			return DocPage{}, errNoStoredObject
		}
		if out.N == 0 {
			out.FirstID = string(id)
		}
		out.N++
		last = append(last[:0], id...)
		if backwards {
			rev = append(rev, doc...)
			ends = append(ends, len(rev))
			continue
		}
		if out.N > 1 {
			out.Data = append(out.Data, ',')
		}
		out.Data = append(out.Data, doc...)
	}
	if err := rows.Err(); err != nil {
		return DocPage{}, err
	}
	if out.N > 0 {
		out.LastID = string(last)
	}
	if backwards {
		// The rows came last object first.
		out.FirstID, out.LastID = out.LastID, out.FirstID
		for i := len(ends) - 1; i >= 0; i-- {
			start := 0
			if i > 0 {
				start = ends[i-1]
			}
			if i < len(ends)-1 {
				out.Data = append(out.Data, ',')
			}
			out.Data = append(out.Data, rev[start:ends[i]]...)
		}
	}
	return out, nil
}
