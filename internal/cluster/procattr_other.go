//go:build !linux

package cluster

import "syscall"

// sysProcAttr: without a parent-death signal outside Linux, children are
// stopped by the harness only.
func sysProcAttr() *syscall.SysProcAttr { return &syscall.SysProcAttr{Setpgid: true} }
