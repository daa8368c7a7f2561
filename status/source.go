package status

import (
	"time"

	"github.com/vxovl/vxovl/cluster"
	"github.com/vxovl/vxovl/driver"
	"github.com/vxovl/vxovl/ipam"
)

// What the status reads from the running plugin; *driver.Driver,
// *cluster.Cluster and *ipam.Driver implement them.
type (
	Driver interface {
		Networks() []driver.NetworkStatus
		Stats() driver.Stats
	}
	Cluster interface {
		Members() []cluster.Member
		Stats() cluster.Stats
	}
	IPAM interface {
		Stats() ipam.Stats
	}
)

// Source builds the status of the running plugin on demand. Each read
// takes its part's own lock briefly and none is held while the next part
// is read or the result rendered, so a status request never makes a Docker
// API call wait; the parts may therefore be a few milliseconds apart.
type Source struct {
	Host    Host
	Driver  Driver
	Cluster Cluster
	IPAM    IPAM
	Now     func() time.Time
}

// Status reads the parts and builds the status.
func (s Source) Status() Status {
	now := time.Now
	if s.Now != nil {
		now = s.Now
	}
	snap := Snapshot{
		Time:     now(),
		Host:     s.Host,
		Networks: s.Driver.Networks(),
		Driver:   s.Driver.Stats(),
		Members:  s.Cluster.Members(),
		Cluster:  s.Cluster.Stats(),
		IPAM:     s.IPAM.Stats(),
	}
	return Build(snap)
}
