//go:build !linux

package main

import "syscall"

// childAttr: own process group. Outside Linux there is no parent-death
// signal; children of a killed vault must be stopped by hand.
func childAttr() *syscall.SysProcAttr { return &syscall.SysProcAttr{Setpgid: true} }
