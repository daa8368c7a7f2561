// Package storetest gives tests of the store's users the state files kept
// as test data in internal/store/testdata.
package storetest

import (
	"os"
	"path/filepath"
	"runtime"
	"testing"
)

// StateV0 copies the state file the release before versioned state wrote
// (see internal/store/testdata/state-v0-generator) to a temporary path and
// returns that path.
func StateV0(t testing.TB) string {
	t.Helper()
	_, here, _, _ := runtime.Caller(0)
	b, err := os.ReadFile(filepath.Join(filepath.Dir(here), "..", "testdata", "state-v0.db"))
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "state.db")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}
