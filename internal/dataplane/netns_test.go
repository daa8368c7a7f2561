package dataplane

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

func TestDoSwitchesAndRestores(t *testing.T) {
	requireRoot(t)
	ns := newNS(t, "do")
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	before, err := netns.Get()
	if err != nil {
		t.Fatal(err)
	}
	defer before.Close()

	target, err := netns.GetFromPath(ns)
	if err != nil {
		t.Fatal(err)
	}
	defer target.Close()
	var inside bool
	boom := errors.New("boom")
	err = Do(ns, func() error {
		cur, err := netns.Get()
		if err != nil {
			return err
		}
		defer cur.Close()
		inside = cur.Equal(target)
		return boom
	})
	if !errors.Is(err, boom) {
		t.Errorf("Do returned %v, want fn's error", err)
	}
	if !inside {
		t.Error("fn did not run inside the target namespace")
	}
	after, err := netns.Get()
	if err != nil {
		t.Fatal(err)
	}
	defer after.Close()
	if !after.Equal(before) {
		t.Error("caller's thread changed namespace")
	}
	if err := Do(filepath.Join(t.TempDir(), "missing"), func() error { return nil }); err == nil {
		t.Error("Do on a missing namespace succeeded")
	}
	// A panic in fn is an error of this call, not the end of the process.
	if err := Do(ns, func() error { panic("bug") }); err == nil || !strings.Contains(err.Error(), "panic in namespace work: bug") {
		t.Errorf("Do with a panicking fn = %v, want the panic as an error", err)
	}
}

// A test that calls t.Fatal in namespace work ends Do's goroutine with
// runtime.Goexit: Do must return an error, not leave the test hanging.
func TestDoSurvivesGoexit(t *testing.T) {
	requireRoot(t)
	ns := newNS(t, "goexit")
	done := make(chan error, 1)
	go func() { done <- Do(ns, func() error { runtime.Goexit(); return nil }) }()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "without returning") {
			t.Errorf("Do with fn calling runtime.Goexit = %v, want an error saying it did not return", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Do still waiting 10 s after fn called runtime.Goexit")
	}
	// Later work still runs (on other threads).
	if err := Do(ns, func() error { return nil }); err != nil {
		t.Errorf("Do after a Goexit: %v", err)
	}
}

func TestPinLifecycle(t *testing.T) {
	requireRoot(t)
	path := filepath.Join(t.TempDir(), "sub", "vxk-pin")
	if IsPinnedNetns(path) {
		t.Fatal("missing path reported as namespace")
	}
	if err := CreatePinned(path); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = Unpin(path) })
	if !IsPinnedNetns(path) || !isMounted(t, path) {
		t.Fatal("CreatePinned did not pin a namespace")
	}
	if err := CreatePinned(path); !errors.Is(err, os.ErrExist) {
		t.Errorf("second CreatePinned = %v, want ErrExist", err)
	}
	if err := Unpin(path); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) || isMounted(t, path) {
		t.Errorf("pin survives Unpin: %v", err)
	}
	if err := Unpin(path); err != nil {
		t.Errorf("Unpin of missing pin = %v", err)
	}

	// A plain file left where a pin should be (e.g. after a crash) is replaced.
	if err := os.WriteFile(path, nil, 0o444); err != nil {
		t.Fatal(err)
	}
	if IsPinnedNetns(path) {
		t.Error("plain file reported as namespace")
	}
	if err := CreatePinned(path); err != nil {
		t.Fatalf("CreatePinned over stale file: %v", err)
	}
	if !IsPinnedNetns(path) {
		t.Error("stale file not replaced by a pin")
	}
}

func TestUnderlayHelpers(t *testing.T) {
	requireRoot(t)
	path := newNS(t, "ul")
	in(t, path, func() error {
		if _, err := DefaultRouteIPv4(); !errors.Is(err, ErrNoAddress) {
			t.Errorf("DefaultRouteIPv4 in an empty namespace = %v, want ErrNoAddress", err)
		}
		return nil
	})

	nl := nsHandle(t, path)
	for i, name := range []string{"d0", "d1"} {
		attrs := netlink.NewLinkAttrs()
		attrs.Name = name
		attrs.MTU = 1400 + i*100
		v := netlink.NewVeth(attrs) // veth, not dummy: the dummy module may be missing
		v.PeerName = name + "p"
		if err := nl.LinkAdd(v); err != nil {
			t.Fatal(err)
		}
		if err := nl.LinkSetUp(mustLink(t, nl, v.PeerName)); err != nil {
			t.Fatal(err)
		}
		d := mustLink(t, nl, name)
		if err := nl.AddrAdd(d, &netlink.Addr{IPNet: mustCIDR(t, []string{"10.231.1.1/24", "10.231.2.1/24"}[i])}); err != nil {
			t.Fatal(err)
		}
		if err := nl.LinkSetUp(d); err != nil {
			t.Fatal(err)
		}
	}
	check := func(step string, want string) {
		t.Helper()
		in(t, path, func() error {
			ip, err := DefaultRouteIPv4()
			if err != nil || ip.String() != want {
				t.Errorf("%s: DefaultRouteIPv4 = %v, %v; want %s", step, ip, err, want)
			}
			return nil
		})
	}
	check("no default route", "10.231.1.1")
	if err := nl.RouteAdd(&netlink.Route{LinkIndex: mustLink(t, nl, "d1").Attrs().Index, Gw: net.ParseIP("10.231.2.254")}); err != nil {
		t.Fatal(err)
	}
	check("default via d1", "10.231.2.1")

	in(t, path, func() error {
		if mtu, err := UnderlayMTU(net.ParseIP("10.231.2.1")); err != nil || mtu != 1500 {
			t.Errorf("UnderlayMTU(d1) = %d, %v; want 1500", mtu, err)
		}
		if mtu, err := UnderlayMTU(net.ParseIP("10.231.1.1")); err != nil || mtu != 1400 {
			t.Errorf("UnderlayMTU(d0) = %d, %v; want 1400", mtu, err)
		}
		if _, err := UnderlayMTU(net.ParseIP("10.231.9.9")); !errors.Is(err, ErrNoAddress) {
			t.Errorf("UnderlayMTU(unknown) = %v, want ErrNoAddress", err)
		}
		return nil
	})
}
