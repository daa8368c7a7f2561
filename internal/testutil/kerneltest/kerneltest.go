// Package kerneltest holds what tests that need the real kernel (network
// namespaces, links, mounts) share: one rule for running without root.
package kerneltest

import (
	"os"
	"strings"
	"testing"
)

// RequireRoot stops a kernel test that cannot run without root: it skips it,
// or fails it where the kernel tests must run (CI=true, VXOVL_REQUIRE_ROOT=1),
// so that a CI job without root does not pass by running none of them.
func RequireRoot(t testing.TB) {
	t.Helper()
	fail, msg := withoutRoot(os.Geteuid(), os.Getenv)
	switch {
	case msg == "":
	case fail:
		t.Fatal(msg)
	default:
		t.Skip(msg)
	}
}

// withoutRoot decides what a kernel test does for user euid: run (msg ""),
// skip, or fail (fail true).
func withoutRoot(euid int, getenv func(string) string) (fail bool, msg string) {
	if euid == 0 {
		return false, ""
	}
	const need = "needs root to create network namespaces and links"
	switch ci := getenv("CI"); {
	case getenv("VXOVL_REQUIRE_ROOT") == "1":
		return true, need + ", and VXOVL_REQUIRE_ROOT=1 requires the kernel tests: run them as root"
	case strings.EqualFold(ci, "true") || ci == "1":
		return true, need + ", and CI=" + ci + " requires the kernel tests: run them as root in CI"
	}
	return false, "skipping: " + need + "; run as root (CI=true or VXOVL_REQUIRE_ROOT=1 turn this skip into a failure)"
}
