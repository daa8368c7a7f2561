package dnsserver

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/miekg/dns"
)

const (
	// maxNameservers is how many nameserver lines of resolv.conf count, as
	// in glibc (MAXNS); later ones are ignored there too.
	maxNameservers = 3
	// recheckInterval is how often, at most, resolv.conf is stat'ed again:
	// on use, not in a loop, so an idle server costs nothing.
	recheckInterval = time.Second
)

// dockerResolver is the embedded DNS server Docker runs in every container.
// A host whose resolv.conf names it (the plugin run inside a container)
// would send the query back to where it came from.
var dockerResolver = netip.MustParseAddr("127.0.0.11")

// parseResolvConf returns the nameserver addresses of a resolv.conf, in
// order, at most maxNameservers. Lines it does not understand are skipped,
// as the C library does.
func parseResolvConf(data []byte) []netip.Addr {
	var out []netip.Addr
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() && len(out) < maxNameservers {
		f := strings.Fields(sc.Text())
		if len(f) < 2 || f[0] != "nameserver" {
			continue
		}
		a, err := netip.ParseAddr(f[1])
		if err != nil {
			continue
		}
		out = append(out, a.Unmap())
	}
	return out
}

// usableUpstreams drops the servers a query must never be forwarded to:
// the server itself (self, its listening addresses), Docker's embedded DNS
// and unspecified addresses.
func usableUpstreams(servers, self []netip.Addr) []netip.Addr {
	var out []netip.Addr
	for _, s := range servers {
		if s.IsUnspecified() || s == dockerResolver || slices.Contains(self, s.WithZone("")) {
			continue
		}
		out = append(out, s)
	}
	return out
}

// fileStamp identifies one version of a file cheaply: a rewrite in place
// changes its size or times, a replacement (rename over it) its inode.
type fileStamp struct {
	dev, ino     uint64
	size         int64
	mtime, ctime int64 // ns since the epoch
	missing      bool
}

func stamp(path string) (fileStamp, error) {
	fi, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return fileStamp{missing: true}, nil
	}
	if err != nil {
		return fileStamp{}, err
	}
	s := fileStamp{size: fi.Size(), mtime: fi.ModTime().UnixNano()}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		s.dev, s.ino = uint64(st.Dev), st.Ino
		s.ctime = st.Ctim.Nano()
	}
	return s, nil
}

// resolvers are the host's upstream resolvers, read from resolv.conf and
// read again when the file changes. The current list is a snapshot that
// readers load without locking.
type resolvers struct {
	path     string
	self     []netip.Addr
	interval time.Duration
	log      *slog.Logger

	refreshing sync.Mutex // one re-read at a time; others use the snapshot
	cur        atomic.Pointer[resolvState]
}

type resolvState struct {
	servers []netip.Addr // usable, in file order
	stamp   fileStamp
	checked time.Time
	// racy: the file was read within a second of its last change. File
	// times are coarse (a few ms), so a second write of the same size in
	// the same tick would leave the stamp as it was; read it once more.
	racy bool
}

func newResolvers(path string, self []netip.Addr, log *slog.Logger) *resolvers {
	r := &resolvers{path: path, self: self, interval: recheckInterval, log: log}
	r.cur.Store(&resolvState{})
	r.refresh(time.Now())
	return r
}

// servers returns the usable upstream servers, re-reading resolv.conf
// first if it changed and was not checked for interval.
func (r *resolvers) servers(now time.Time) []netip.Addr {
	st := r.cur.Load()
	if now.Sub(st.checked) >= r.interval && r.refreshing.TryLock() {
		r.refreshLocked(now)
		r.refreshing.Unlock()
		st = r.cur.Load()
	}
	return st.servers
}

func (r *resolvers) refresh(now time.Time) {
	r.refreshing.Lock()
	defer r.refreshing.Unlock()
	r.refreshLocked(now)
}

func (r *resolvers) refreshLocked(now time.Time) {
	old := r.cur.Load()
	s, err := stamp(r.path)
	if err != nil {
		// Keep the servers we know rather than lose name resolution.
		r.log.Warn("cannot check the upstream resolvers' file; keeping the last servers read", "file", r.path, "err", err)
		r.cur.Store(&resolvState{servers: old.servers, stamp: old.stamp, checked: now})
		return
	}
	if s == old.stamp && !old.checked.IsZero() && !old.racy {
		r.cur.Store(&resolvState{servers: old.servers, stamp: s, checked: now})
		return
	}
	var servers []netip.Addr
	if !s.missing {
		data, err := os.ReadFile(r.path)
		if err != nil {
			r.log.Warn("cannot read the upstream resolvers' file; keeping the last servers read", "file", r.path, "err", err)
			r.cur.Store(&resolvState{servers: old.servers, stamp: old.stamp, checked: now})
			return
		}
		servers = usableUpstreams(parseResolvConf(data), r.self)
	}
	r.cur.Store(&resolvState{servers: servers, stamp: s, checked: now,
		racy: !s.missing && now.UnixNano()-s.mtime < int64(time.Second)})
	if slices.Equal(servers, old.servers) && !old.checked.IsZero() {
		return
	}
	if len(servers) == 0 {
		r.log.Warn("no usable upstream resolvers: names outside the network get SERVFAIL", "file", r.path)
	} else {
		r.log.Info("upstream resolvers", "file", r.path, "servers", fmt.Sprint(servers))
	}
}

// upstreamClient forwards queries to the resolvers. Its sockets are made
// by the goroutine that forwards, in the plugin's (host) network namespace,
// whatever namespace the listening sockets are in.
type upstreamClient struct {
	resolvers *resolvers
	timeout   time.Duration // per upstream server
	port      uint16        // 53; tests use another
	udp, tcp  dns.Client
}

func newUpstreamClient(r *resolvers, timeout time.Duration) *upstreamClient {
	return &upstreamClient{
		resolvers: r,
		timeout:   timeout,
		port:      53,
		udp:       dns.Client{Net: "udp", Timeout: timeout},
		tcp:       dns.Client{Net: "tcp", Timeout: timeout},
	}
}

var errNoUpstream = errors.New("no upstream resolver configured")

// exchange asks the upstream servers in order, each for at most timeout
// (UDP, then TCP if the answer was truncated), and returns the first
// answer. A server that answers SERVFAIL, REFUSED or NOTIMP is passed over
// for the next, as the C library does; if none does better, its answer is
// returned. The query keeps its question, flags and EDNS record; its ID is
// the caller's to restore.
func (u *upstreamClient) exchange(ctx context.Context, q *dns.Msg) (*dns.Msg, error) {
	servers := u.resolvers.servers(time.Now())
	if len(servers) == 0 {
		return nil, errNoUpstream
	}
	var fallback *dns.Msg
	var errs []error
	for _, s := range servers {
		if ctx.Err() != nil {
			errs = append(errs, ctx.Err())
			break
		}
		r, err := u.exchangeOne(ctx, q, netip.AddrPortFrom(s, u.port).String())
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", s, err))
			continue
		}
		switch r.Rcode {
		case dns.RcodeServerFailure, dns.RcodeRefused, dns.RcodeNotImplemented:
			fallback = r
			continue
		}
		return r, nil
	}
	if fallback != nil {
		return fallback, nil
	}
	return nil, errors.Join(errs...)
}

func (u *upstreamClient) exchangeOne(ctx context.Context, q *dns.Msg, addr string) (*dns.Msg, error) {
	ctx, cancel := context.WithTimeout(ctx, u.timeout)
	defer cancel()
	m := q.Copy()
	m.Id = dns.Id()
	r, err := exchangeCtx(ctx, &u.udp, m, addr)
	if err == nil && r.Truncated {
		r, err = exchangeCtx(ctx, &u.tcp, m, addr)
	}
	if err != nil {
		return nil, err
	}
	if !r.Response || len(r.Question) != 1 || !sameQuestion(r.Question[0], m.Question[0]) {
		return nil, fmt.Errorf("answer does not match the question %s", m.Question[0].String())
	}
	return r, nil
}

// exchangeCtx is one exchange with one server that ends when ctx does: the dns
// package only takes ctx's deadline, so the socket is closed on cancel.
func exchangeCtx(ctx context.Context, c *dns.Client, m *dns.Msg, addr string) (*dns.Msg, error) {
	conn, err := c.DialContext(ctx, addr)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	r, _, err := c.ExchangeWithConnContext(ctx, m, conn)
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	return r, err
}

func sameQuestion(a, b dns.Question) bool {
	return a.Qtype == b.Qtype && a.Qclass == b.Qclass && strings.EqualFold(a.Name, b.Name)
}
