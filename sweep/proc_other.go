//go:build !unix

package sweep

import (
	"os"
	"syscall"
)

// childAttr: no process groups nor parent-death signal here.
func childAttr() *syscall.SysProcAttr { return nil }

// terminate asks the run's process to stop.
func terminate(p *os.Process) error { return p.Signal(syscall.SIGTERM) }
