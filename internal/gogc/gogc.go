// Package gogc sets a process's default garbage-collector target, which the
// operator's GOGC (and GOMEMLIMIT) still override.
package gogc

import (
	"os"
	"runtime/debug"
)

// SetDefault sets the GC target to percent unless the environment sets
// GOGC. Call it first thing in main.
func SetDefault(percent int) {
	if _, set := os.LookupEnv("GOGC"); !set {
		debug.SetGCPercent(percent)
	}
}
