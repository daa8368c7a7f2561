package dataplane

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
)

func TestOwnHostLink(t *testing.T) {
	cases := []struct {
		name, linkType, want string
	}{
		{tempVxlanName(42), "vxlan", LeftoverVxlan},
		{tempVxlanName(16777215), "vxlan", LeftoverVxlan},
		{HostIfName("0123456789abcdef"), "veth", LeftoverVeth},
		{HostIfName("abc"), "veth", LeftoverVeth},
		{tempVxlanName(42), "dummy", ""},               // vxovl's name, not its type
		{HostIfName("0123456789abcdef"), "dummy", ""},  // idem
		{"vxo00002", "vxlan", ""},                      // too short
		{"vxo00002a0", "vxlan", ""},                    // too long
		{"vxoABCDEF", "vxlan", ""},                     // not vxovl's lower-case hex
		{"vxc", "veth", ""},                            // no ID
		{"vxc0123456789a", "veth", ""},                 // longer than HostIfName makes
		{"vxcfoo", "veth", ""},                         // not hex
		{overlayIfName("0123456789"), "veth", ""},      // overlay ends live in the overlay namespace
		{"vxlan0", "vxlan", ""}, {"br0", "bridge", ""}, // devices of the overlay namespace, never in the host's
		{"veth1234", "veth", ""}, {"docker0", "bridge", ""}, {"eth0", "device", ""},
	}
	for _, c := range cases {
		if got := OwnHostLink(c.name, c.linkType); got != c.want {
			t.Errorf("OwnHostLink(%q, %q) = %q, want %q", c.name, c.linkType, got, c.want)
		}
	}
}

func TestIsPinName(t *testing.T) {
	for name, want := range map[string]bool{
		"vni-1": true, "vni-16777215": true, "vni-0": false, "vni-16777216": false, "vni-07": false,
		"vni-": false, "vni-x": false, "other": false, "vni-1.bak": false,
	} {
		if got := IsPinName(name); got != want {
			t.Errorf("IsPinName(%q) = %v, want %v", name, got, want)
		}
	}
}

// TestLeftoversAreRemovedAndOnlyThem builds an overlay with an endpoint
// whose container end is still in the host namespace, plus a temporary
// VXLAN device and a stale pin as an interrupted EnsureNetwork leaves them,
// next to links and namespaces that are not vxovl's: Leftovers lists
// vxovl's, RemoveLeftover removes them, the others stay, and a second pass
// finds nothing.
func TestLeftoversAreRemovedAndOnlyThem(t *testing.T) {
	h := newTestHost(t, "leftovers")
	h.ensureNetwork(testSpec(t, 201))
	const id = "0123456789abcdef"
	h.do(func() error {
		_, err := h.ov.EnsureEndpoint(EndpointSpec{VNI: 201, ID: id, MAC: mustMAC(t, "02:00:0a:c9:00:02")})
		return err
	})
	host := h.host()
	stray := &netlink.Vxlan{LinkAttrs: netlink.LinkAttrs{Name: tempVxlanName(202)}, VxlanId: 202, Port: 4789}
	foreign := []netlink.Link{
		&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: HostIfName("fedcba9876")}}, // vxovl's name, not its type
		&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "vethother"}, PeerName: "vethother1"},
		&netlink.Vxlan{LinkAttrs: netlink.LinkAttrs{Name: "vxother"}, VxlanId: 203, Port: 4790},
	}
	for _, l := range append([]netlink.Link{stray}, foreign...) {
		if err := host.LinkAdd(l); err != nil {
			t.Fatalf("adding %s: %v", l.Attrs().Name, err)
		}
	}
	dir := filepath.Dir(h.ov.NamespacePath(201))
	stale := filepath.Join(dir, "vni-204")
	other := filepath.Join(dir, "other")
	h.do(func() error {
		if err := CreatePinned(other); err != nil {
			return err
		}
		return CreatePinned(stale)
	})
	t.Cleanup(func() { _ = Unpin(other) })
	if err := Unpin(stale); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(stale, nil, 0o444); err != nil {
		t.Fatal(err)
	}

	var found []Leftover
	h.do(func() (err error) { found, err = Leftovers(dir); return err })
	want := []Leftover{
		{LeftoverNamespace, h.ov.NamespacePath(201)},
		{LeftoverStalePin, stale},
		{LeftoverVxlan, tempVxlanName(202)},
		{LeftoverVeth, HostIfName(id)},
	}
	sortLeftovers(found)
	sortLeftovers(want)
	if !slices.Equal(found, want) {
		t.Fatalf("Leftovers = %v, want %v", found, want)
	}
	h.do(func() error {
		for _, l := range found {
			if err := RemoveLeftover(l); err != nil {
				return err
			}
		}
		return nil
	})
	h.do(func() (err error) { found, err = Leftovers(dir); return err })
	if len(found) != 0 {
		t.Fatalf("after removing: %v", found)
	}
	for _, l := range foreign {
		if _, err := host.LinkByName(l.Attrs().Name); err != nil {
			t.Errorf("%s, not vxovl's, was removed: %v", l.Attrs().Name, err)
		}
	}
	if !IsPinnedNetns(other) {
		t.Error("a namespace not named by vxovl was removed")
	}
	h.do(func() error { // a second pass over nothing
		for _, l := range want {
			if err := RemoveLeftover(l); err != nil {
				return err
			}
		}
		return nil
	})
}

func sortLeftovers(ls []Leftover) {
	slices.SortFunc(ls, func(a, b Leftover) int { return strings.Compare(a.String(), b.String()) })
}
