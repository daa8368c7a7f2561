package cluster

import (
	"fmt"
	"io"
	"log/slog"
	"net"
	"testing"
	"time"
)

func discardLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// newTestCluster is a Cluster without memberlist or loops, for feeding its
// receive path and table directly. It has no peers, so nothing is sent.
func newTestCluster(name string) *Cluster {
	return newCluster(Config{NodeName: name, AdvertiseAddr: net.IPv4(127, 0, 0, 1).To4(), BindPort: 1,
		TombstoneTTL: time.Minute, Logger: discardLogger()}, nil)
}

// count returns how many live records and tombstones the table holds.
func (t *table) count() (live, tombstones int) {
	for _, o := range t.owners {
		for _, e := range o.recs {
			if e.deleted {
				tombstones++
			} else {
				live++
			}
		}
	}
	return
}

// haveNets makes c have the networks (publishes their definitions), so
// that it holds their endpoints.
func haveNets(t testing.TB, c *Cluster, vnis ...uint32) {
	t.Helper()
	for _, vni := range vnis {
		if err := c.PublishNetwork(Network{VNI: vni, Subnet: fmt.Sprintf("10.%d.%d.0/24", vni>>8&255, vni&255), MTU: 1450}); err != nil {
			t.Fatal(err)
		}
	}
}
