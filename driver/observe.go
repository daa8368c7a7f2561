package driver

import "time"

// Observer is told how long the kernel work of the reconcile loop takes
// (the plugin's metrics). Its methods are called from the loop: they must
// return at once.
type Observer interface {
	// ObserveSync is one network's sync: its tables, and on a reconcile
	// pass first its devices' health.
	ObserveSync(time.Duration)
	// ObserveReconcile is a whole reconcile pass over every network.
	ObserveReconcile(time.Duration)
}
