package main

import (
	"bytes"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vxovl/vxovl/internal/dataplane"
	"github.com/vxovl/vxovl/internal/testutil/kerneltest"
)

// TestCleanupCommand runs `vxovl cleanup` in a throwaway host namespace
// holding one overlay: --dry-run lists it and removes nothing, the real run
// removes it and says so, and a second run finds nothing.
func TestCleanupCommand(t *testing.T) {
	kerneltest.RequireRoot(t)
	hostNS := filepath.Join(t.TempDir(), "host")
	if err := dataplane.CreatePinned(hostNS); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = dataplane.Unpin(hostNS) })
	dir := filepath.Join(t.TempDir(), "netns")
	ov := dataplane.New(dir, "", nil)
	t.Cleanup(func() { _ = dataplane.Do(hostNS, func() error { return ov.DeleteNetwork(7) }) })
	err := dataplane.Do(hostNS, func() error {
		return ov.EnsureNetwork(dataplane.NetworkSpec{VNI: 7, MTU: 1450, VTEP: []byte{10, 231, 0, 1}})
	})
	if err != nil {
		t.Fatal(err)
	}
	run := func(args ...string) (int, string) {
		var out, errOut bytes.Buffer
		var code int
		if err := dataplane.Do(hostNS, func() error {
			code = cleanupCommand(append([]string{"--netns-dir", dir}, args...), &out, &errOut)
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		return code, out.String() + errOut.String()
	}
	pin := ov.NamespacePath(7)
	// The IPsec policies of an encrypted network (no SAs: this kernel may
	// lack ESP) are left too.
	if err := dataplane.Do(hostNS, func() error { _, err := ov.EnsureXfrm([]int{4800}, nil, true); return err }); err != nil {
		t.Fatal(err)
	}
	ipsecLine := fmt.Sprintf("IPsec state (0 SAs, 2 policies with reqid %#x)", dataplane.XfrmReqID)
	if code, out := run("--dry-run"); code != 0 || out != "would remove overlay namespace "+pin+"\nwould remove "+ipsecLine+"\n" {
		t.Fatalf("--dry-run: exit %d, %q", code, out)
	}
	if !dataplane.IsPinnedNetns(pin) {
		t.Fatal("--dry-run removed the namespace")
	}
	if code, out := run(); code != 0 || out != "removed overlay namespace "+pin+"\nremoved "+ipsecLine+"\n" {
		t.Fatalf("cleanup: exit %d, %q", code, out)
	}
	if dataplane.IsPinnedNetns(pin) {
		t.Fatal("the namespace is still pinned")
	}
	if code, out := run(); code != 0 || !strings.HasPrefix(out, "nothing of vxovl's left") {
		t.Fatalf("second cleanup: exit %d, %q", code, out)
	}
	if code, _ := run("extra"); code != 2 {
		t.Fatalf("cleanup with an argument: exit %d, want 2", code)
	}
}
