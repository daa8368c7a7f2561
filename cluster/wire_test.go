package cluster

import (
	"bytes"
	"fmt"
	"net"
	"slices"
	"strings"
	"testing"

	"github.com/vxovl/vxovl/internal/dnsname"
)

func TestWireRoundTrip(t *testing.T) {
	w := wireRecord{Kind: "ep", Key: "7/abc", Version: 1 << 62, Value: []byte{1, 2, 3}}
	b := encodeRecord("node-a", w)
	if b[0] != msgRecord {
		t.Fatal("type byte")
	}
	owner, got, err := decodeRecord(b[1:])
	if err != nil || owner != "node-a" || got.Key != w.Key || got.Version != w.Version || !bytes.Equal(got.Value, w.Value) {
		t.Fatalf("record round trip: %q %+v %v", owner, got, err)
	}
	m := stateMsg{Sender: "a", Clock: 99, Flags: stateHello, Owners: []ownerRecords{
		{Owner: "a", Recs: []wireRecord{w, {Kind: "ep", Key: "7/x", Version: 3, Deleted: true}}},
		{Owner: "b"},
	}}
	sb := encodeState(m)
	gm, err := decodeState(sb[1:])
	if err != nil || gm.Sender != "a" || gm.Clock != 99 || gm.Flags != stateHello || len(gm.Owners) != 2 ||
		len(gm.Owners[0].Recs) != 2 || !gm.Owners[0].Recs[1].Deleted {
		t.Fatalf("state round trip: %+v %v", gm, err)
	}
	m.Flags, m.Networks = stateHello|stateNoCluster, []uint32{7, 4242}
	gm, err = decodeState(encodeState(m)[1:])
	if err != nil || gm.Flags != stateHello|stateNoCluster || !slices.Equal(gm.Networks, []uint32{7, 4242}) {
		t.Fatalf("state with networks round trip: %+v %v", gm, err)
	}
	if _, err := decodeState(encodeState(stateMsg{Sender: "a", Networks: []uint32{0}})[1:]); err == nil {
		t.Fatal("a state covering VNI 0 decoded")
	}
	am, err := decodeAck(encodeAck(ackMsg{From: "b", Kind: "ep", Key: "7/abc", Version: 42})[1:])
	if err != nil || am.From != "b" || am.Key != "7/abc" || am.Version != 42 {
		t.Fatalf("ack round trip: %+v %v", am, err)
	}
	db := encodeDirect(directMsg{From: "a", Kind: "ipam", Payload: []byte("hi")})
	dm, err := decodeDirect(db[1:])
	if err != nil || dm.From != "a" || string(dm.Payload) != "hi" {
		t.Fatalf("direct round trip: %+v %v", dm, err)
	}
	// Every strict prefix must fail cleanly.
	for i := 0; i < len(sb)-1; i++ {
		if _, err := decodeState(sb[1 : 1+i]); err == nil {
			t.Fatalf("truncated state at %d decoded", i)
		}
	}
}

// A realistic endpoint record must fit one UDP packet with room to spare
// for encryption and compound headers.
func TestRecordFitsPacket(t *testing.T) {
	id := string(bytes.Repeat([]byte("f"), 64))
	ep := Endpoint{VNI: 1 << 23, ID: id, IP: net.IPv4(10, 0, 0, 1), MAC: net.HardwareAddr{2, 0, 0, 0, 0, 1}, VTEP: net.IPv4(192, 168, 0, 1)}
	b := encodeRecord(string(bytes.Repeat([]byte("n"), maxNodeName)), wireRecord{Kind: kindEndpoint, Key: endpointKey(ep.VNI, id), Version: 1 << 62, Value: encodeEndpointValue(ep)})
	if len(b) > 400 {
		t.Fatalf("endpoint record is %d bytes", len(b))
	}
	// The most names one endpoint can have: MaxNames of them, MaxNamesLen
	// bytes together.
	for i := range dnsname.MaxNames {
		ep.Names = append(ep.Names, fmt.Sprintf("%02d", i)+strings.Repeat("n", MaxNamesLen/dnsname.MaxNames-2))
	}
	if names, err := checkEndpoint(ep); err != nil || namesLen(names) != MaxNamesLen {
		t.Fatalf("largest set of names: %v, %d bytes", err, namesLen(names))
	}
	ep.Created = 1 << 62
	b = encodeRecord(string(bytes.Repeat([]byte("n"), maxNodeName)), wireRecord{Kind: kindEndpoint, Key: endpointKey(ep.VNI, strings.Repeat("f", maxEPID)), Version: 1 << 63, Value: encodeEndpointValue(ep)})
	if len(b) > 1400-100 {
		t.Fatalf("largest endpoint record is %d bytes, too big for a 1400-byte packet with overheads", len(b))
	}
	t.Logf("largest endpoint record: %d bytes", len(b))
	worst := encodeRecord(string(bytes.Repeat([]byte("n"), maxNodeName)), wireRecord{Kind: string(bytes.Repeat([]byte("k"), maxKindLen)),
		Key: string(bytes.Repeat([]byte("k"), maxKeyLen)), Version: 1 << 63, Value: make([]byte, MaxValueLen)})
	if len(worst) > 1400-100 {
		t.Fatalf("largest record is %d bytes, too big for a 1400-byte packet with overheads", len(worst))
	}
}

// FuzzDecode feeds arbitrary bytes through the full receive path: decode,
// validate, merge. It must never panic. The seed corpus runs as a normal
// test.
func FuzzDecode(f *testing.F) {
	ep := Endpoint{VNI: 7, ID: "e1", IP: net.IPv4(10, 0, 0, 2), MAC: net.HardwareAddr{2, 0, 0, 0, 0, 1}, VTEP: net.IPv4(127, 0, 0, 1), Created: 3}
	rec := wireRecord{Kind: kindEndpoint, Key: endpointKey(7, "e1"), Version: 5, Value: encodeEndpointValue(ep)}
	f.Add(encodeRecord("a", rec))
	legacy := rec
	legacy.Value = legacy.Value[:epFixedLen]
	f.Add(encodeRecord("b", legacy))
	named := ep
	named.Names = []string{"db", "db.app", "web_1"}
	withNames := wireRecord{Kind: kindEndpoint, Key: endpointKey(7, "e2"), Version: 6, Value: encodeEndpointValue(named)}
	f.Add(encodeRecord("a", withNames))
	named.Names = []string{"web", "DB"} // not normalised
	f.Add(encodeRecord("a", wireRecord{Kind: kindEndpoint, Key: endpointKey(7, "e3"), Version: 6, Value: encodeEndpointValue(named)}))
	f.Add(encodeState(stateMsg{Sender: "b", Clock: 9, Owners: []ownerRecords{{Owner: "b", Recs: []wireRecord{withNames, legacy}}}}))
	f.Add(encodeRecord("a", wireRecord{Kind: kindEndpoint, Key: "7/e1", Version: 6, Deleted: true}))
	f.Add(encodeRecord("a", wireRecord{Kind: kindNetwork, Key: "7", Version: 6, Value: encodeNetworkValue(Network{Subnet: "10.0.0.0/24", MTU: 1450})}))
	f.Add(encodeState(stateMsg{Sender: "a", Clock: 9, Owners: []ownerRecords{{Owner: "a", Recs: []wireRecord{rec}}, {Owner: "b", Recs: []wireRecord{rec}}}}))
	f.Add(encodeDirect(directMsg{From: "a", Kind: "k", Payload: []byte("x")}))
	f.Add(encodeState(stateMsg{Sender: "b", Clock: 9, Flags: stateNoCluster | stateHello, Networks: []uint32{7, 8},
		Owners: []ownerRecords{{Owner: "b", Recs: []wireRecord{withNames}}}}))
	f.Add(encodeAck(ackMsg{From: "b", Kind: kindEndpoint, Key: "7/e1", Version: 5}))
	f.Add([]byte{})
	f.Add([]byte{msgState, 1, 'a', 0, 0, 0xff, 0xff, 0xff, 0xff, 0x0f})
	f.Add([]byte{msgRecord, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01})
	f.Fuzz(func(t *testing.T, b []byte) {
		c := newTestCluster("self")
		haveNets(t, c, 7)
		c.t.setAlive("a", true, nil)
		c.t.setAlive("b", true, nil)
		(*delegate)(c).NotifyMsg(b)
		(*delegate)(c).MergeRemoteState(b, false)
		for _, e := range c.eps.endpoints(7) {
			names, err := checkEndpoint(e)
			if err != nil || !slices.Equal(names, e.Names) || e.VTEP.To4() == nil || e.Created == 0 || e.Created > e.Version {
				t.Fatalf("invalid endpoint stored: %+v (%v)", e, err)
			}
		}
	})
}

func TestNetworkValueRoundTrip(t *testing.T) {
	for _, n := range []Network{
		{VNI: 7, Subnet: "10.0.0.0/24", MTU: 1450},
		{VNI: 7, Subnet: "10.0.0.0/24", MTU: 1410, Encrypted: true},
	} {
		w := wireRecord{Kind: kindNetwork, Key: networkKey(n.VNI), Value: encodeNetworkValue(n)}
		got, err := decodeNetwork("a", w)
		if err != nil {
			t.Fatalf("%+v: %v", n, err)
		}
		n.Node = "a"
		if got != n {
			t.Errorf("round trip of %+v gave %+v", n, got)
		}
	}
	// An unencrypted network's record is what older versions wrote.
	if got := string(encodeNetworkValue(Network{VNI: 7, Subnet: "10.0.0.0/24", MTU: 1450})[2:]); got != "10.0.0.0/24" {
		t.Errorf("unencrypted record value %q changed its format", got)
	}
}
