package ipam

import (
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"path/filepath"
	"testing"

	"github.com/vxovl/vxovl/cluster"
	"github.com/vxovl/vxovl/internal/store"
)

// BenchmarkRefreshLearnsClaims: a node (re)joining a 100-host cluster
// learns 1600 block claims (16 per host) in its first Refresh, all of it
// under the lock that claim requests from other hosts wait for. Run it with
// TMPDIR on a real disk: fsync is what it measures.
func BenchmarkRefreshLearnsClaims(b *testing.B) {
	const owners, perOwner = 100, 16
	n := newFakeNet(b)
	subnet := netip.MustParsePrefix("10.0.0.0/12")
	n.mu.Lock()
	for o := range owners {
		name := fmt.Sprintf("o%03d", o)
		n.nodes[name] = &fakeNode{n: n, name: name}
		recs := map[string]cluster.Record{}
		for k := range perOwner {
			p := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(o / 16), byte(o%16*16 + k), 0}), 24)
			v, err := encodeRecord(&claim{Prefix: p, Subnet: subnet, ClaimedAt: 1})
			if err != nil {
				b.Fatal(err)
			}
			recs[KindBlock+"\x00"+p.String()] = cluster.Record{Kind: KindBlock, Key: p.String(), Owner: name, Value: v}
		}
		n.records[name] = recs
	}
	n.mu.Unlock()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	for i := 0; b.Loop(); i++ {
		b.StopTimer()
		st, err := store.Open(filepath.Join(b.TempDir(), fmt.Sprintf("state%d.db", i)))
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		// New's first Refresh is the one that learns every claim.
		d, err := New(Config{NodeName: "learner", Logger: log}, &fakeNode{n: n, name: "learner", kinds: map[string]cluster.KindOptions{}}, st)
		b.StopTimer()
		if err != nil {
			b.Fatal(err)
		}
		if len(d.known) != owners*perOwner {
			b.Fatalf("learned %d claims, want %d", len(d.known), owners*perOwner)
		}
		st.Close()
		b.StartTimer()
	}
}
