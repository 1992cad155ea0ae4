package domain

// Field is one optional request field: absent, explicitly null, or a value.
type Field[T any] struct {
	Set  bool // present in the request
	Null bool // present as JSON null
	V    T
}

// Value returns a present, non-null field holding v.
func Value[T any](v T) Field[T] { return Field[T]{Set: true, V: v} }

// Null returns a field present as JSON null.
func Null[T any]() Field[T] { return Field[T]{Set: true, Null: true} }

// has reports whether the field holds a value.
func (f Field[T]) has() bool { return f.Set && !f.Null }
