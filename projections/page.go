package projections

import (
	"context"
	"slices"
)

// Page selects one page of a list ordered by id (= creation time).
type Page struct {
	Limit  int
	Desc   bool
	After  string // the page that follows this id in the requested order
	Before string // the page just before this id, still in the requested order
}

// page runs base (which ends in a WHERE clause) for one page in the requested
// order, and reports whether more items lie beyond the page in the direction
// of travel.
func page[T any](ctx context.Context, q querier, base string, args []any, p Page, scan func(scanner) (T, error)) ([]T, bool, error) {
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
			sqlText += " AND id < ?"
		} else {
			sqlText += " AND id > ?"
		}
		args = append(args, cursor)
	}
	if scanDesc {
		sqlText += " ORDER BY id DESC"
	} else {
		sqlText += " ORDER BY id ASC"
	}
	sqlText += " LIMIT ?"
	args = append(args, p.Limit+1)
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
