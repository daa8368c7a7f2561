package dataplane

import (
	"path/filepath"
	"slices"
	"testing"

	"golang.org/x/sys/unix"
)

// nsInode identifies the namespace pinned at path: two pins of one
// namespace have the same inode.
func nsInode(t *testing.T, path string) uint64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatalf("stat %s: %v", path, err)
	}
	return st.Ino
}

// The plugin pins each namespace twice: in the netns directory (which
// outlives the plugin only when it is a shared host mount) and under its
// propagated mount (which outlives a crash, not a disable). A restart that
// finds only one of the pins re-adopts the same namespace, with what is in
// it, instead of building a new, empty one.
func TestFallbackPinKeepsNamespaces(t *testing.T) {
	h := newTestHost(t, "fb")
	dir, fb := filepath.Join(t.TempDir(), "netns"), filepath.Join(t.TempDir(), "propagated")
	h.ov = New(dir, fb, nil)
	const vni = 4242
	spec := testSpec(t, vni)
	h.ensureNetwork(spec)
	path, fbPath := h.ov.NamespacePath(vni), h.ov.fallbackPath(vni)
	if !IsPinnedNetns(path) || !IsPinnedNetns(fbPath) {
		t.Fatalf("pins after create: %s %v, %s %v; want both", path, IsPinnedNetns(path), fbPath, IsPinnedNetns(fbPath))
	}
	ino := nsInode(t, path)
	if nsInode(t, fbPath) != ino {
		t.Fatal("the two pins hold different namespaces")
	}
	vxIndex := mustLink(t, h.overlay(vni), VxlanName).Attrs().Index

	restart := func(what string, lost string) {
		t.Helper()
		h.do(func() error { return Unpin(lost) })
		h.ov = New(dir, fb, nil)
		var vnis []uint32
		h.do(func() (err error) { vnis, err = h.ov.Networks(); return err })
		if !slices.Equal(vnis, []uint32{vni}) {
			t.Fatalf("%s: Networks() = %v, want [%d]", what, vnis, vni)
		}
		h.ensureNetwork(spec)
		for _, p := range []string{path, fbPath} {
			if !IsPinnedNetns(p) || nsInode(t, p) != ino {
				t.Fatalf("%s: %s does not pin the overlay's namespace", what, p)
			}
		}
		if idx := mustLink(t, h.overlay(vni), VxlanName).Attrs().Index; idx != vxIndex {
			t.Fatalf("%s: vxlan0 was rebuilt (index %d, was %d)", what, idx, vxIndex)
		}
	}
	// A crash on a host whose netns directory is not shared: the plugin's
	// mount namespace, and the pin in it, died; the propagated mount stayed.
	restart("crash without a shared netns directory", path)
	// A disable: dockerd unmounted the propagated mount.
	restart("disable", fbPath)

	h.do(func() error { return h.ov.DeleteNetwork(vni) })
	if IsPinnedNetns(path) || IsPinnedNetns(fbPath) {
		t.Fatal("DeleteNetwork left a pin")
	}
}
