package gogc

import (
	"os"
	"os/exec"
	"runtime/debug"
	"strconv"
	"strings"
	"testing"
)

// SetDefault sets its target, and leaves an operator's GOGC alone. Each
// case runs in a child process (the setting is process-wide).
func TestSetDefault(t *testing.T) {
	if os.Getenv("TUNEGC_CHILD") == "1" {
		SetDefault(400)
		old := debug.SetGCPercent(100)
		os.Stdout.WriteString("gcpercent=" + strconv.Itoa(old) + "\n")
		return
	}
	for _, c := range []struct {
		gogc string // "" = unset
		want string
	}{{"", "gcpercent=400"}, {"150", "gcpercent=150"}, {"off", "gcpercent=-1"}} {
		cmd := exec.Command(os.Args[0], "-test.run=^TestSetDefault$")
		env := []string{"TUNEGC_CHILD=1"}
		for _, kv := range os.Environ() {
			if !strings.HasPrefix(kv, "GOGC=") {
				env = append(env, kv)
			}
		}
		if c.gogc != "" {
			env = append(env, "GOGC="+c.gogc)
		}
		cmd.Env = env
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("GOGC=%q: %v", c.gogc, err)
		}
		if !strings.Contains(string(out), c.want) {
			t.Errorf("GOGC=%q: child printed %q, want %s", c.gogc, out, c.want)
		}
	}
}
