package cluster

import "syscall"

// sysProcAttr: the child gets SIGTERM when its parent dies, even by SIGKILL
// (Linux parent-death signal), so no node or replica outlives its harness.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
}
