//go:build unix && !linux

package runlock

import (
	"errors"
	"syscall"
)

// processAlive reports whether a process with this pid runs on this host
// (signal 0 checks without sending anything; EPERM: it runs as another
// user).
func processAlive(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}

// pidNamespace is "" where PID namespaces are not read: a lock of this host
// is then judged by its pid alone.
func pidNamespace() string { return "" }
