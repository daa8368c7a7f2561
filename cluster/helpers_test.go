package cluster

import (
	"io"
	"log/slog"
	"net"
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
