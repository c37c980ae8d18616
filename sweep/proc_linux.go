package sweep

import (
	"os"
	"syscall"
)

// childAttr puts a run's process in a process group of its own (so that
// cancelling reaches whatever it started too) and has the kernel send it
// SIGTERM when the sweep's process dies, even by kill -9: an orphaned run
// would otherwise train on, unwatched. SIGTERM rather than SIGKILL, so that
// it finishes its step and saves a checkpoint; its lock names it until it
// exits, so a sweep restarted meanwhile leaves the run alone. The signal is
// tied to the thread that started the process: Launch keeps that thread
// until the process has ended.
func childAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
}

// terminate sends SIGTERM to the run's process group.
func terminate(p *os.Process) error {
	if err := syscall.Kill(-p.Pid, syscall.SIGTERM); err == nil {
		return nil
	}
	return p.Signal(syscall.SIGTERM)
}
