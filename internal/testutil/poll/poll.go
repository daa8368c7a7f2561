// Package poll is the one way tests wait for a condition: a bounded loop
// that checks often at first and backs off, so fast conditions pass fast and
// slow ones (a docker command per check) are not hammered.
package poll

import (
	"testing"
	"time"
)

const (
	firstInterval = 5 * time.Millisecond
	maxInterval   = 50 * time.Millisecond
)

// Until calls cond until it reports true and returns how long that took.
// When timeout passes first it fails t, naming what was awaited and cond's
// last explanation.
func Until(t testing.TB, timeout time.Duration, what string, cond func() (bool, string)) time.Duration {
	t.Helper()
	start := time.Now()
	interval := firstInterval
	for {
		ok, why := cond()
		if ok {
			return time.Since(start)
		}
		if time.Since(start) > timeout {
			if why != "" {
				why = ": " + why
			}
			t.Fatalf("timed out after %v waiting for %s%s", timeout, what, why)
			return 0
		}
		time.Sleep(interval)
		interval = min(2*interval, maxInterval)
	}
}

// True is Until for a condition with nothing to explain.
func True(t testing.TB, timeout time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	return Until(t, timeout, what, func() (bool, string) { return cond(), "" })
}
