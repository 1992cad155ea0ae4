package main

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// clockTick is the unit of utime/stime in /proc/<pid>/stat (USER_HZ, 100
// on Linux).
const clockTick = 10 * time.Millisecond

// procStat returns the parent pid and the CPU time (user + system) of
// process pid from /proc (ok false when it is gone or not Linux).
func procStat(pid int) (ppid int, cpu time.Duration, ok bool) {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return 0, 0, false
	}
	// The command name is in parentheses and may hold spaces.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, 0, false
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return 0, 0, false
	}
	ppid, _ = strconv.Atoi(f[1])
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return ppid, time.Duration(ut+st) * clockTick, true
}

// treeCPU is the CPU time used so far by process root and every live
// descendant (bin/vault run and its api and projector children): CPU per
// request is a cost that other load on a shared machine barely changes,
// unlike a rate or a latency.
func treeCPU(root int) time.Duration {
	var total time.Duration
	for _, c := range treeCPUs(root) {
		total += c
	}
	return total
}

// treeCPUs is treeCPU per command name (vault, api, projector).
func treeCPUs(root int) map[string]time.Duration {
	out := map[string]time.Duration{}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return out
	}
	parent := map[int]int{}
	cpu := map[int]time.Duration{}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if pp, c, ok := procStat(pid); ok {
			parent[pid], cpu[pid] = pp, c
		}
	}
	for pid, c := range cpu {
		for p := pid; p > 1; p = parent[p] {
			if p == root {
				out[procName(pid)] += c
				break
			}
		}
	}
	return out
}

// procName is the command name of pid (its /proc comm).
func procName(pid int) string {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "comm"))
	if err != nil {
		return "?"
	}
	return strings.TrimSpace(string(b))
}

// processCPU is the CPU time (user + system) the bench process has used so
// far, all its threads included.
func processCPU() time.Duration {
	_, cpu, _ := procStat(os.Getpid())
	return cpu
}
