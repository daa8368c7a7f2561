package cluster

import (
	"bytes"
	"net"
	"testing"
	"time"

	"github.com/vxovl/vxovl/internal/testutil/poll"
)

// A node alone sends nothing and hears only what the test sends it: every
// packet and connection, and a packet's every byte, is counted in.
func TestTrafficCountsWhatArrives(t *testing.T) {
	c := startNode(t, "alone", nodeOpts{}, nil)
	if got := c.Traffic(); got != (Traffic{}) {
		t.Fatalf("traffic before anything was sent: %+v", got)
	}
	u, err := net.Dial("udp", addr(c))
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	if _, err := u.Write(bytes.Repeat([]byte{0xff}, 123)); err != nil {
		t.Fatal(err)
	}
	poll.True(t, 5*time.Second, "the packet counted", func() bool { return c.Traffic().MessagesIn == 1 })
	if got := c.Traffic(); got.BytesIn != 123 || got.MessagesOut != 0 || got.BytesOut != 0 {
		t.Fatalf("after one 123-byte packet: %+v", got)
	}
	conn, err := net.Dial("tcp", addr(c))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	poll.True(t, 5*time.Second, "the connection counted", func() bool { return c.Traffic().MessagesIn == 2 })
}

// Two nodes that exchange an endpoint count packets and connections both
// ways, and gossip still works through the counting transport.
func TestTrafficCountsBothWays(t *testing.T) {
	a := startNode(t, "a", nodeOpts{nets: testNets}, nil)
	b := startNode(t, "b", nodeOpts{nets: testNets, peers: []string{addr(a)}}, nil)
	if _, err := a.PublishEndpoint(testEP(7, "ep-a", 2)); err != nil {
		t.Fatal(err)
	}
	poll.True(t, 5*time.Second, "b sees ep-a", func() bool { return hasEP(b, 7, "a", "ep-a") })
	for _, n := range []*Cluster{a, b} {
		poll.True(t, 5*time.Second, n.self+" counts traffic both ways", func() bool {
			tr := n.Traffic()
			return tr.MessagesIn > 0 && tr.MessagesOut > 0 && tr.BytesIn > tr.MessagesIn && tr.BytesOut > tr.MessagesOut
		})
	}
	// Counters only grow.
	before := a.Traffic()
	poll.True(t, 5*time.Second, "more gossip", func() bool { return a.Traffic().MessagesOut > before.MessagesOut })
	after := a.Traffic()
	if after.MessagesIn < before.MessagesIn || after.BytesIn < before.BytesIn || after.BytesOut <= before.BytesOut {
		t.Fatalf("counters went down: %+v then %+v", before, after)
	}
}
