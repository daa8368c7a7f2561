package cluster

import (
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
)

// Traffic is what crossed this node's gossip port since New, as on the wire
// (encrypted when a SecretKey is set) and including memberlist's own
// failure detection and push/pull: what gossip costs the underlay. A
// message is one UDP packet or one TCP connection, counted in the direction
// it was sent or opened; the bytes of a connection count in the direction
// each of them went.
type Traffic struct {
	MessagesIn, MessagesOut uint64
	BytesIn, BytesOut       uint64
}

// traffic holds the counters behind Traffic.
type traffic struct {
	msgsIn, msgsOut, bytesIn, bytesOut atomic.Uint64
}

// Traffic returns the gossip traffic counters.
func (c *Cluster) Traffic() Traffic {
	return Traffic{
		MessagesIn: c.traffic.msgsIn.Load(), MessagesOut: c.traffic.msgsOut.Load(),
		BytesIn: c.traffic.bytesIn.Load(), BytesOut: c.traffic.bytesOut.Load(),
	}
}

// countingTransport wraps memberlist's transport to count its traffic.
// Incoming packets and connections pass through one goroutine each, which
// hands them on unchanged (a packet keeps its receive timestamp, which
// memberlist's RTT estimates use).
type countingTransport struct {
	memberlist.NodeAwareTransport
	t        *traffic
	packets  chan *memberlist.Packet
	streams  chan net.Conn
	stop     chan struct{}
	stopOnce sync.Once
	wg       sync.WaitGroup
}

func newCountingTransport(inner memberlist.NodeAwareTransport, t *traffic) *countingTransport {
	ct := &countingTransport{
		NodeAwareTransport: inner, t: t,
		packets: make(chan *memberlist.Packet), streams: make(chan net.Conn), stop: make(chan struct{}),
	}
	ct.wg.Add(2)
	go ct.forwardPackets(inner.PacketCh())
	go ct.forwardStreams(inner.StreamCh())
	return ct
}

func (ct *countingTransport) forwardPackets(in <-chan *memberlist.Packet) {
	defer ct.wg.Done()
	for {
		select {
		case <-ct.stop:
			return
		case p := <-in:
			ct.t.msgsIn.Add(1)
			ct.t.bytesIn.Add(uint64(len(p.Buf)))
			select {
			case ct.packets <- p:
			case <-ct.stop:
				return
			}
		}
	}
}

func (ct *countingTransport) forwardStreams(in <-chan net.Conn) {
	defer ct.wg.Done()
	for {
		select {
		case <-ct.stop:
			return
		case c := <-in:
			ct.t.msgsIn.Add(1)
			select {
			case ct.streams <- &countingConn{Conn: c, t: ct.t}:
			case <-ct.stop:
				_ = c.Close()
				return
			}
		}
	}
}

func (ct *countingTransport) PacketCh() <-chan *memberlist.Packet { return ct.packets }
func (ct *countingTransport) StreamCh() <-chan net.Conn           { return ct.streams }

func (ct *countingTransport) WriteTo(b []byte, addr string) (time.Time, error) {
	return ct.sent(len(b))(ct.NodeAwareTransport.WriteTo(b, addr))
}

func (ct *countingTransport) WriteToAddress(b []byte, addr memberlist.Address) (time.Time, error) {
	return ct.sent(len(b))(ct.NodeAwareTransport.WriteToAddress(b, addr))
}

// sent counts a packet once it has gone out.
func (ct *countingTransport) sent(n int) func(time.Time, error) (time.Time, error) {
	return func(ts time.Time, err error) (time.Time, error) {
		if err == nil {
			ct.t.msgsOut.Add(1)
			ct.t.bytesOut.Add(uint64(n))
		}
		return ts, err
	}
}

func (ct *countingTransport) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	return ct.dialed(ct.NodeAwareTransport.DialTimeout(addr, timeout))
}

func (ct *countingTransport) DialAddressTimeout(addr memberlist.Address, timeout time.Duration) (net.Conn, error) {
	return ct.dialed(ct.NodeAwareTransport.DialAddressTimeout(addr, timeout))
}

func (ct *countingTransport) dialed(c net.Conn, err error) (net.Conn, error) {
	if err != nil {
		return nil, err
	}
	ct.t.msgsOut.Add(1)
	return &countingConn{Conn: c, t: ct.t}, nil
}

// Shutdown stops the inner transport first, so that nothing new arrives,
// then the forwarders.
func (ct *countingTransport) Shutdown() error {
	err := ct.NodeAwareTransport.Shutdown()
	ct.stopOnce.Do(func() { close(ct.stop) })
	ct.wg.Wait()
	return err
}

// countingConn counts the bytes of one gossip TCP connection.
type countingConn struct {
	net.Conn
	t *traffic
}

func (c *countingConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	c.t.bytesIn.Add(uint64(n))
	return n, err
}

func (c *countingConn) Write(b []byte) (int, error) {
	n, err := c.Conn.Write(b)
	c.t.bytesOut.Add(uint64(n))
	return n, err
}

// createMemberlist starts memberlist on a counting transport around the UDP
// and TCP one it would make itself, or around the one Tune gave it (a
// plain, not node-aware Transport is left to memberlist's own wrapping and
// not counted).
func (c *Cluster) createMemberlist(mc *memberlist.Config) (*memberlist.Memberlist, error) {
	if mc.Transport == nil {
		nt, err := memberlist.NewNetTransport(&memberlist.NetTransportConfig{
			BindAddrs: []string{mc.BindAddr}, BindPort: mc.BindPort, Logger: mc.Logger,
		})
		if err != nil {
			return nil, err
		}
		mc.Transport = nt
	}
	if nt, ok := mc.Transport.(memberlist.NodeAwareTransport); ok {
		mc.Transport = newCountingTransport(nt, &c.traffic)
	}
	ml, err := memberlist.Create(mc)
	if err != nil {
		// Shutting a transport down twice is harmless, in case memberlist did.
		_ = mc.Transport.Shutdown()
		return nil, err
	}
	return ml, nil
}
