package poll

import (
	"strings"
	"testing"
	"time"
)

// recorder is a testing.TB that remembers a failure instead of ending the test.
type recorder struct {
	testing.TB
	failed string
}

func (r *recorder) Helper() {}
func (r *recorder) Fatalf(format string, args ...any) {
	r.failed = format
	_ = args
}

func TestUntil(t *testing.T) {
	n := 0
	if d := True(t, time.Second, "third call", func() bool { n++; return n == 3 }); d <= 0 || n != 3 {
		t.Fatalf("took %v, %d calls; want 3 calls", d, n)
	}
	r := &recorder{TB: t}
	Until(r, 20*time.Millisecond, "never", func() (bool, string) { return false, "still no" })
	if !strings.Contains(r.failed, "timed out") {
		t.Fatalf("a condition that never holds did not fail the test: %q", r.failed)
	}
}
