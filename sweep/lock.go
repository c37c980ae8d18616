package sweep

import "github.com/attnlab/attnlab/internal/runlock"

// A run folder is worked on by one process at a time (package runlock):
// runOne takes DIR/runs/NAME/lock before it touches the folder, and hands
// it to the run's process (Job.Env), so that the lock names the process
// that writes: `trainer train` takes the lock over as it starts and holds
// it until it exits. A kill of the sweep then leaves a lock naming the
// trainer, which keeps a restarted sweep off the run while it still writes
// (on Linux it gets SIGTERM when the sweep dies: see childAttr).

// LockedError is a run whose lock another process holds.
type LockedError = runlock.LockedError
