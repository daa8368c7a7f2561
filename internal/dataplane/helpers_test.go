package dataplane

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"github.com/vxovl/vxovl/internal/testutil/kerneltest"
	"golang.org/x/sys/unix"
)

// requireRoot stops a kernel test that cannot run without root (see kerneltest).
func requireRoot(t testing.TB) {
	t.Helper()
	kerneltest.RequireRoot(t)
}

// newNS pins a fresh namespace "vxk-<random>-<what>" under a temp dir, brings
// lo up, and removes it when the test ends.
func newNS(t testing.TB, what string) string {
	t.Helper()
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	path := filepath.Join(t.TempDir(), "vxk-"+hex.EncodeToString(b)+"-"+what)
	if err := CreatePinned(path); err != nil {
		t.Fatalf("create test namespace: %v", err)
	}
	t.Cleanup(func() {
		if err := Unpin(path); err != nil {
			t.Errorf("unpin test namespace: %v", err)
		}
	})
	h := nsHandle(t, path)
	lo, err := h.LinkByName("lo")
	if err != nil {
		t.Fatal(err)
	}
	if err := h.LinkSetUp(lo); err != nil {
		t.Fatal(err)
	}
	return path
}

// nsHandle opens a netlink handle in the namespace pinned at path.
func nsHandle(t testing.TB, path string) *netlink.Handle {
	t.Helper()
	ns, err := netns.GetFromPath(path)
	if err != nil {
		t.Fatalf("open namespace %s: %v", path, err)
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns, unix.NETLINK_ROUTE)
	if err != nil {
		t.Fatalf("netlink handle in %s: %v", path, err)
	}
	t.Cleanup(h.Close)
	return h
}

// testHost is a throwaway "host" namespace with an Overlay used from inside it.
type testHost struct {
	t  testing.TB
	ns string
	ov *Overlay
}

func newTestHost(t testing.TB, what string) *testHost {
	t.Helper()
	requireRoot(t)
	h := &testHost{t: t, ns: newNS(t, what), ov: New(filepath.Join(t.TempDir(), "netns"), "", nil)}
	t.Cleanup(func() {
		err := Do(h.ns, func() error {
			vnis, err := h.ov.Networks()
			for _, v := range vnis {
				err = errors.Join(err, h.ov.DeleteNetwork(v))
			}
			return err
		})
		if err != nil {
			t.Errorf("cleanup overlay networks: %v", err)
		}
	})
	return h
}

// do runs fn inside the host namespace, as the plugin would run in the host.
func (h *testHost) do(fn func() error) {
	h.t.Helper()
	if err := Do(h.ns, fn); err != nil {
		h.t.Fatal(err)
	}
}

// try is like do but returns fn's error.
func (h *testHost) try(fn func() error) error {
	return Do(h.ns, fn)
}

func (h *testHost) ensureNetwork(spec NetworkSpec) {
	h.t.Helper()
	h.do(func() error { return h.ov.EnsureNetwork(spec) })
}

func (h *testHost) host() *netlink.Handle { return nsHandle(h.t, h.ns) }

func (h *testHost) overlay(vni uint32) *netlink.Handle { return nsHandle(h.t, h.ov.NamespacePath(vni)) }

// linkIndexes maps link names to ifindexes in the namespace behind nl.
func linkIndexes(t testing.TB, nl *netlink.Handle) map[string]int {
	t.Helper()
	links, err := nl.LinkList()
	if err != nil {
		t.Fatal(err)
	}
	m := make(map[string]int, len(links))
	for _, l := range links {
		m[l.Attrs().Name] = l.Attrs().Index
	}
	return m
}

func mustLink(t testing.TB, nl *netlink.Handle, name string) netlink.Link {
	t.Helper()
	l, err := nl.LinkByName(name)
	if err != nil {
		t.Fatalf("link %s: %v", name, err)
	}
	return l
}

func mustCIDR(t testing.TB, s string) *net.IPNet {
	t.Helper()
	ip, n, err := net.ParseCIDR(s)
	if err != nil {
		t.Fatal(err)
	}
	n.IP = ip
	return n
}

func mustMAC(t testing.TB, s string) net.HardwareAddr {
	t.Helper()
	m, err := net.ParseMAC(s)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// isMounted reports whether path is a mount point in this mount namespace.
func isMounted(t testing.TB, path string) bool {
	t.Helper()
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) > 4 && f[4] == path {
			return true
		}
	}
	return false
}

// in runs fn inside the namespace pinned at path and fails the test if the
// switch (or fn) fails.
func in(t testing.TB, path string, fn func() error) {
	t.Helper()
	if err := Do(path, fn); err != nil {
		t.Fatal(err)
	}
}
