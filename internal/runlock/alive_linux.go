package runlock

import (
	"bytes"
	"errors"
	"os"
	"strconv"
	"syscall"
)

// processAlive reports whether a process with this pid runs on this host.
// A zombie (exited, not yet reaped: an orphan in a container whose init
// does not reap) is not alive: it will never write again. Signal 0 checks
// without sending anything; EPERM: it runs as another user.
func processAlive(pid int) bool {
	if b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat"); err == nil {
		// "pid (comm) S ...": the state follows the last ')' (comm may hold any byte).
		if i := bytes.LastIndexByte(b, ')'); i >= 0 && i+2 < len(b) {
			if s := b[i+2]; s == 'Z' || s == 'X' {
				return false
			}
		}
	}
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}

// pidNamespace identifies this process's PID namespace ("pid:[N]"), or ""
// when /proc does not tell.
func pidNamespace() string {
	ns, err := os.Readlink("/proc/self/ns/pid")
	if err != nil {
		return ""
	}
	return ns
}
