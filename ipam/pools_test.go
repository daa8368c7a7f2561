package ipam

import (
	"net/netip"
	"path/filepath"
	"slices"
	"testing"

	"github.com/docker/go-plugins-helpers/ipam"
)

func TestPoolsCountsBlocksAndAddresses(t *testing.T) {
	n := newFakeNet(t)
	nd := startNode(t, n, "h1", filepath.Join(t.TempDir(), "state.db"), Config{})
	if got := nd.d.Pools(); len(got) != 0 {
		t.Fatalf("pools before any network: %+v", got)
	}
	a := createNetwork(t, nd.d, "10.60.0.0/24", "", nil, "", "10.60.0.250")
	b := createNetwork(t, nd.d, "10.50.0.0/24", "", nil, "")
	// A pin (an address, not a block) first: asked after the blocks, it
	// failed when one of the two random blocks had handed it out already.
	mustAlloc(t, nd.d, a, "10.60.0.200")
	for range 20 { // /28 blocks: 2 of them
		mustAlloc(t, nd.d, a, "")
	}
	want := []PoolStatus{
		{Subnet: netip.MustParsePrefix("10.50.0.0/24")},
		{Subnet: netip.MustParsePrefix("10.60.0.0/24"), Blocks: 2, Addresses: 22},
	}
	if got := nd.d.Pools(); !slices.Equal(got, want) {
		t.Fatalf("pools %+v, want %+v", got, want)
	}
	last := mustAlloc(t, nd.d, b, "")
	if err := nd.d.ReleaseAddress(&ipam.ReleaseAddressRequest{PoolID: b, Address: last}); err != nil {
		t.Fatal(err)
	}
	if got := nd.d.Pools()[0]; got.Addresses != 0 {
		t.Fatalf("after releasing its only address: %+v", got)
	}
}
