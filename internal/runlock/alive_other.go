//go:build !unix

package runlock

// processAlive cannot tell here: a lock of this host is then only stale
// after its lease.
func processAlive(pid int) bool { return true }

// pidNamespace is "" where PID namespaces are not read: a lock of this host
// is then judged by its pid alone.
func pidNamespace() string { return "" }
