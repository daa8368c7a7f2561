package status

import (
	"bytes"
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/vxovl/vxovl/driver"
)

func TestJSONRoundTrip(t *testing.T) {
	for name, snap := range map[string]Snapshot{
		"three hosts": snapshot(),
		"empty":       {Time: t0, Host: host(false)},
	} {
		t.Run(name, func(t *testing.T) {
			st := Build(snap)
			var buf bytes.Buffer
			if err := WriteJSON(&buf, st); err != nil {
				t.Fatal(err)
			}
			got, err := ReadJSON(bytes.NewReader(buf.Bytes()))
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, st) {
				t.Fatalf("round trip changed the status:\n got %+v\nwant %+v\nJSON %s", got, st, buf.Bytes())
			}
		})
	}
}

// The JSON names are an interface for scripts: they must not change by
// accident.
func TestJSONNames(t *testing.T) {
	var buf bytes.Buffer
	if err := WriteJSON(&buf, Build(snapshot())); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		`"generated": "2025-03-04T12:00:30Z"`, `"warnings": []`, `"node": "h1"`, `"vtep": "10.98.0.1"`,
		`"vxlan_port": 4789`, `"gossip_port": 7947`, `"default_mtu": 1450`, `"dead_timeout": "10s"`,
		`"reconcile_interval": "10s"`, `"peers": [`, `"metrics_addr": "127.0.0.1:9747"`, `"gossip_encrypted": true`,
		`"members": [`, `"state": "alive"`, `"self": true`, `"vni": 4242`, `"flood_entries": 2`, `"local_endpoints": 2`,
		`"location": "remote"`, `"mac": "02:42:0a:d2:00:03"`, `"names": [`, `"drift_repairs": 1`,
		`"unfinished_cleanups": 0`, `"last_reconcile": "2025-03-04T12:00:25Z"`, `"gossip_decrypt_failures": 6`,
		`"gossip_malformed_records": 7`,
	} {
		if !strings.Contains(buf.String(), want) {
			t.Errorf("JSON lacks %s", want)
		}
	}
	if t.Failed() {
		t.Log(buf.String())
	}
}

func TestReadJSONRejectsGarbage(t *testing.T) {
	for _, in := range []string{"", "<html>", `{"generated": 5}`, `{"host": {"settings": {"dead_timeout": "soon"}}}`} {
		if _, err := ReadJSON(strings.NewReader(in)); err == nil || !strings.Contains(err.Error(), "vxovl status") {
			t.Errorf("ReadJSON(%q) = %v, want an error saying what it was decoding", in, err)
		}
	}
}

// wide returns a snapshot with one network of n remote endpoints.
func wide(n int) Snapshot {
	snap := snapshot()
	nw := driver.NetworkStatus{ID: "bigbigbigbigbig", Name: "big", VNI: 7, Subnet: "10.230.0.0/16", MTU: 1450}
	for i := range n {
		nw.Remote = append(nw.Remote, driver.EndpointStatus{
			ID: fmt.Sprint("ep", i), Node: "h2", VTEP: "10.98.0.2",
			IP: fmt.Sprintf("10.230.%d.%d", i/256, i%256), MAC: fmt.Sprintf("02:42:0a:e6:%02x:%02x", i/256, i%256),
		})
	}
	snap.Networks = []driver.NetworkStatus{nw}
	return snap
}

func TestHTML(t *testing.T) {
	snap := snapshot()
	snap.Host.Settings.GossipEncrypted = false
	snap.Networks[0].Name = `<script>alert("x")</script>`
	var buf bytes.Buffer
	if err := WriteHTML(&buf, Build(snap)); err != nil {
		t.Fatal(err)
	}
	page := buf.String()
	for _, want := range []string{
		"<title>vxovl on h1</title>", "h2", "h3", "10.98.0.3", "this host", // members
		"app", "4242", "10.210.0.0/24", "10.210.0.10", "02:42:0a:d2:00:0a", "db, db.app", // networks
		"&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;", // escaped
		"control plane is UNAUTHENTICATED", "127.0.0.1:9747", "drift repairs",
		"2025-03-04 12:00:25 UTC (5s ago)",
	} {
		if !strings.Contains(page, want) {
			t.Errorf("page lacks %q", want)
		}
	}
	if strings.Contains(page, "<script>") {
		t.Error("a network name reached the page unescaped")
	}
	if w, s := strings.Index(page, "UNAUTHENTICATED"), strings.Index(page, "<h2>Settings"); w < 0 || w > s {
		t.Error("the warning is not at the top of the page")
	}
	if t.Failed() {
		t.Log(page)
	}
}

func TestHTMLCapsEndpoints(t *testing.T) {
	var buf bytes.Buffer
	if err := WriteHTML(&buf, Build(wide(250))); err != nil {
		t.Fatal(err)
	}
	page := buf.String()
	if n := strings.Count(page, `<span class="tag remote">`); n != listLimit {
		t.Errorf("page lists %d endpoints, want %d", n, listLimit)
	}
	if !strings.Contains(page, "and 50 more") || !strings.Contains(page, "250 remote") {
		t.Error("page does not say how many endpoints it left out")
	}
}

func TestText(t *testing.T) {
	snap := snapshot()
	snap.Host.Settings.GossipEncrypted = false
	var buf bytes.Buffer
	if err := WriteText(&buf, Build(snap)); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	lines := strings.Split(out, "\n")
	if !strings.HasPrefix(lines[0], "vxovl on h1 (VTEP 10.98.0.1), version v0.1.0") {
		t.Errorf("first line %q", lines[0])
	}
	if w, s := strings.Index(out, "WARNING: GOSSIP_KEY is unset: the control plane is UNAUTHENTICATED"), strings.Index(out, "SETTINGS"); w < 0 || w > s {
		t.Error("the warning is not above everything else")
	}
	for _, want := range []string{
		"MEMBERS (3, all alive)", "h1 (this host)", "NETWORKS (2)",
		"app  VNI 4242  subnet 10.210.0.0/24  gateway 10.210.0.1  MTU 1400  flood on  DNS on",
		"endpoints: 2 local, 2 remote; programmed: 2 neighbor, 2 FDB, 2 flood; conflicts: 1",
		"db,db.app", "gossip decrypt failures", "METRICS_ADDR",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("text lacks %q", want)
		}
	}
	// Columns line up: in the line holding key, value starts where col
	// starts in the table's header, the nearest line above it holding col.
	column := func(col, key, value string) {
		t.Helper()
		for i, l := range lines {
			if !strings.Contains(l, key) {
				continue
			}
			for j := i - 1; j >= 0; j-- {
				if strings.Contains(lines[j], col) {
					if strings.Index(lines[j], col) != strings.Index(l, value) {
						t.Errorf("%q is not under %q:\n%s\n%s", value, col, lines[j], l)
					}
					return
				}
			}
		}
		t.Errorf("no line holds %q under a header holding %q", key, col)
	}
	column("ADDRESS", "h3 ", "10.98.0.3")
	column("STATE", "h1 (this host)", "alive  3")
	column("MAC", "10.210.0.9 ", "02:42:0a:d2:00:09")
	column("NAMES", "10.210.0.2 ", "db,db.app")
	column("NAMES", "10.220.0.10 ", "nginx")
	if t.Failed() {
		t.Log(out)
	}
}

func TestTextCapsEndpoints(t *testing.T) {
	var buf bytes.Buffer
	if err := WriteText(&buf, Build(wide(201))); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	if n := strings.Count(out, " remote "); n != listLimit {
		t.Errorf("text lists %d endpoints, want %d", n, listLimit)
	}
	if !strings.Contains(out, "... and 1 more") {
		t.Error("text does not say how many endpoints it left out")
	}
}
