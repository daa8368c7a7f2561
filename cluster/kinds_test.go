package cluster

import (
	"errors"
	"net"
	"slices"
	"testing"
)

// Built-in and registered kinds go through one mechanism: checks on
// receipt (counted as malformed), re-checks when a validator arrives, and
// coalesced change notification (endpoints per VNI, others per kind).
func TestKindsShareOneMechanism(t *testing.T) {
	rec := &recorder{}
	c := newCluster(newTestCluster("self").cfg, rec)
	c.t.setAlive("a", true, nil)
	haveNets(t, c, 7, 8)
	receive := func(w wireRecord) { (*delegate)(c).NotifyMsg(encodeRecord("a", w)) }

	if err := c.RegisterKind(kindEndpoint, KindOptions{}); err == nil {
		t.Fatal("registering over the built-in endpoint kind was accepted")
	}
	if err := c.PutRecord(kindNetwork, "7", []byte("x")); err == nil {
		t.Fatal("a raw record of the built-in network kind was accepted")
	}

	// Records of a kind nobody registered yet are kept (another node may
	// use the kind) until a validator says otherwise.
	receive(wireRecord{Kind: "blk", Key: "good", Version: 1, Value: []byte("ok")})
	receive(wireRecord{Kind: "blk", Key: "bad", Version: 1, Value: []byte("x")})
	if n := len(c.Records("blk")); n != 2 {
		t.Fatalf("%d unregistered records held, want 2", n)
	}
	var changed []string
	err := c.RegisterKind("blk", KindOptions{
		Validate: func(key string, v []byte) error {
			if string(v) != "ok" {
				return errors.New("not ok")
			}
			return nil
		},
		Changed: func(kind string) { changed = append(changed, kind) },
	})
	if err != nil {
		t.Fatal(err)
	}
	if recs := c.Records("blk"); len(recs) != 1 || recs[0].Key != "good" || c.Stats().RecordsMalformed != 1 {
		t.Fatalf("after registering: records %v, malformed %d; want only good, 1", recs, c.Stats().RecordsMalformed)
	}
	receive(wireRecord{Kind: "blk", Key: "bad2", Version: 1, Value: []byte("y")})
	receive(wireRecord{Kind: kindEndpoint, Key: "7/e", Version: 1, Value: []byte{1, 2, 3}})
	if c.Stats().RecordsMalformed != 3 || len(c.Records("blk")) != 1 || len(c.Records(kindEndpoint)) != 0 {
		t.Fatalf("malformed records: counted %d, want 3", c.Stats().RecordsMalformed)
	}

	c.notify.take() // drop what came before
	ep := Endpoint{VNI: 7, ID: "e", IP: net.IPv4(10, 0, 0, 2), MAC: net.HardwareAddr{2, 0, 0, 0, 0, 1}, VTEP: net.IPv4(10, 1, 0, 1), Created: 2}
	receive(wireRecord{Kind: kindEndpoint, Key: endpointKey(7, "e"), Version: 2, Value: encodeEndpointValue(ep)})
	receive(wireRecord{Kind: kindEndpoint, Key: endpointKey(8, "e"), Version: 2, Deleted: true})
	receive(wireRecord{Kind: "blk", Key: "good", Version: 2, Value: []byte("ok")})
	receive(wireRecord{Kind: "blk", Key: "other", Version: 2, Value: []byte("ok")})
	c.deliver(c.notify.take())
	if rec.count(7) != 1 || rec.count(8) != 1 || !slices.Equal(changed, []string{"blk"}) {
		t.Fatalf("notified VNI 7 %d times, VNI 8 %d times, kinds %v; want 1, 1, [blk]", rec.count(7), rec.count(8), changed)
	}
	if got := c.Endpoints(7); len(got) != 1 || got[0].Node != "a" || !got[0].VTEP.Equal(ep.VTEP) {
		t.Fatalf("Endpoints(7) = %v", got)
	}
}
