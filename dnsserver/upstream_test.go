package dnsserver

import (
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

func TestParseResolvConf(t *testing.T) {
	got := parseResolvConf([]byte(`# comment
; nameserver 10.0.0.9
search example.com
nameserver 10.0.0.1
nameserver   fe80::1%eth0  # trailing words are ignored
nameserver not-an-address
nameserver
options rotate
nameserver ::ffff:10.0.0.3
nameserver 10.0.0.4
`))
	want := []netip.Addr{addr("10.0.0.1"), addr("fe80::1%eth0"), addr("10.0.0.3")}
	if !slices.Equal(got, want) {
		t.Errorf("parseResolvConf = %v, want %v (at most 3, as the C library)", got, want)
	}
	self := []netip.Addr{addr("10.10.0.1")}
	got = usableUpstreams(addrs("10.10.0.1", "127.0.0.11", "0.0.0.0", "::", "127.0.0.53", "10.0.0.1"), self)
	if want := addrs("127.0.0.53", "10.0.0.1"); !slices.Equal(got, want) {
		t.Errorf("usableUpstreams = %v, want %v", got, want)
	}
}

// TestResolvConfSameStampRewrite: a rewrite of the same size within the
// file system's timestamp tick leaves the file's stamp as it was; a file
// read within a second of its change is read once more, so the rewrite is
// not missed.
func TestResolvConfSameStampRewrite(t *testing.T) {
	path := filepath.Join(t.TempDir(), "resolv.conf")
	if err := os.WriteFile(path, []byte("nameserver 10.0.0.1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	r := newResolvers(path, nil, slog.New(slog.DiscardHandler))
	first := r.cur.Load()
	if !slices.Equal(first.servers, addrs("10.0.0.1")) || !first.racy {
		t.Fatalf("first read: %+v, want 10.0.0.1, racy (just written)", first)
	}
	// The rewrite, as if it had landed in the same tick: same stamp as read.
	if err := os.WriteFile(path, []byte("nameserver 10.0.0.2\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	s, err := stamp(path)
	if err != nil {
		t.Fatal(err)
	}
	r.cur.Store(&resolvState{servers: first.servers, stamp: s, checked: first.checked, racy: true})
	later := time.Unix(0, s.mtime).Add(recheckInterval) // a second after the rewrite
	if got := r.servers(later); !slices.Equal(got, addrs("10.0.0.2")) {
		t.Errorf("after a same-stamp rewrite: %v, want 10.0.0.2", got)
	}
	// Once the file is a second old it is trusted, and not read again.
	if r.cur.Load().racy {
		t.Errorf("still racy a second after the change")
	}
	if err := os.WriteFile(path, []byte("nameserver 10.0.0.3\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	s, _ = stamp(path)
	st := r.cur.Load()
	r.cur.Store(&resolvState{servers: st.servers, stamp: s, checked: st.checked})
	if got := r.servers(later.Add(recheckInterval)); !slices.Equal(got, addrs("10.0.0.2")) {
		t.Errorf("an unchanged stamp was read again: %v", got)
	}
	// Within the interval nothing is checked.
	if err := os.WriteFile(path, []byte("nameserver 10.0.0.44\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	checked := r.cur.Load().checked
	if got := r.servers(checked.Add(recheckInterval - time.Millisecond)); !slices.Equal(got, addrs("10.0.0.2")) {
		t.Errorf("checked again within the interval: %v", got)
	}
	if got := r.servers(checked.Add(recheckInterval)); !slices.Equal(got, addrs("10.0.0.44")) {
		t.Errorf("a changed file was not read: %v", got)
	}
}
