//go:build unix && !linux

package sweep

import (
	"os"
	"syscall"
)

// childAttr puts a run's process in a process group of its own, so that
// cancelling reaches whatever it started too. There is no parent-death
// signal here: a run whose sweep was killed trains on, but its lock names
// it, so a restarted sweep leaves the run to it.
func childAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}

// terminate sends SIGTERM to the run's process group.
func terminate(p *os.Process) error {
	if err := syscall.Kill(-p.Pid, syscall.SIGTERM); err == nil {
		return nil
	}
	return p.Signal(syscall.SIGTERM)
}
