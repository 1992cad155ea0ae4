package main

import "syscall"

// childAttr: own process group, and SIGTERM when vault dies (even by
// SIGKILL), so no api or projector outlives it and holds its ports.
func childAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
}
