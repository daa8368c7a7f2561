// Package dnsserver is vxovl's name service for one overlay network: a DNS
// server on the network's gateway address, inside its overlay namespace,
// that knows the containers of every host on the network.
//
// Docker's embedded DNS (127.0.0.11) knows only the containers of its own
// host and forwards other names to the container's --dns servers, from inside
// the container. A container started with --dns <gateway> therefore reaches
// this server for the names of containers on other hosts. It answers those
// from its Table (bare and as name.<network>), answers reverse lookups for
// the network's subnet, and forwards every other name to the host's own
// resolvers, from the host namespace the plugin runs in.
package dnsserver

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"
)

const (
	defaultTTL             = time.Second
	defaultUpstreamTimeout = 2 * time.Second
	defaultResolvConf      = "/etc/resolv.conf"
	maxTTL                 = time.Hour
	maxUpstreamTimeout     = 30 * time.Second

	headerLen = 12
	// maxQueryLen bounds a query: one question (at most 255 bytes of name)
	// and a few EDNS options fit many times over. Longer is not a query.
	maxQueryLen = 4096
	// ednsSize is the UDP payload size the server advertises and the most
	// it sends over UDP to an EDNS client: 1232 bytes cross any path without
	// IP fragmentation (the DNS flag day 2020 value).
	ednsSize = 1232
	// maxForwards bounds the UDP queries being forwarded at once; more are
	// dropped and the client retries. Each holds a goroutine and a socket
	// for at most the upstream timeouts.
	maxForwards = 256
	// maxTCPConns bounds the open TCP connections; more are closed at once.
	maxTCPConns = 64
	// tcpIdleTimeout closes a TCP connection that sends no complete query
	// for this long (RFC 7766 asks servers to time idle clients out).
	tcpIdleTimeout = 10 * time.Second
	// upstreamWarnEvery rate-limits the warning that no upstream answers.
	upstreamWarnEvery = time.Minute
)

// Config configures a Server. The zero value is usable.
type Config struct {
	// TTL of the answers about the network's containers, rounded down to
	// whole seconds, at most an hour; 0 means the default, 1 s. Docker's
	// embedded DNS uses 600 s for its local names, but it learns of a
	// removed container at once; clients that cache (nscd,
	// systemd-resolved, the JVM) would keep a container of another host for
	// the whole TTL after it is gone, so answers here live about as long as
	// it takes the removal to arrive. Docker's embedded DNS itself caches
	// nothing, so without such a client 1 s costs nothing either.
	TTL time.Duration
	// UpstreamTimeout bounds how long one upstream resolver may take to
	// answer one forwarded query (over UDP, and over TCP if the UDP answer
	// was truncated); resolvers are tried in order. 0 means the default,
	// 2 s, so that the second of two resolvers still answers before
	// Docker's embedded DNS gives up on this server (after 4 s).
	UpstreamTimeout time.Duration
	// ResolvConf is the file the upstream resolvers are read from (its
	// nameserver lines, at most 3). It is read again when it changes
	// (checked at most once a second, when a query is forwarded). "" means
	// /etc/resolv.conf. Without usable resolvers, other names get SERVFAIL.
	ResolvConf string
	// Log receives the server's messages; nil discards them.
	Log *slog.Logger

	upstreamPort uint16 // 0 = 53; tests run upstreams on other ports
}

func (c Config) withDefaults() (Config, error) {
	switch {
	case c.TTL < 0 || c.TTL > maxTTL:
		return c, fmt.Errorf("DNS TTL %v: must be between 0 (default %v) and %v", c.TTL, defaultTTL, maxTTL)
	case c.UpstreamTimeout < 0 || c.UpstreamTimeout > maxUpstreamTimeout:
		return c, fmt.Errorf("DNS upstream timeout %v: must be between 0 (default %v) and %v", c.UpstreamTimeout, defaultUpstreamTimeout, maxUpstreamTimeout)
	}
	if c.TTL == 0 {
		c.TTL = defaultTTL
	}
	if c.UpstreamTimeout == 0 {
		c.UpstreamTimeout = defaultUpstreamTimeout
	}
	if c.ResolvConf == "" {
		c.ResolvConf = defaultResolvConf
	}
	if c.Log == nil {
		c.Log = slog.New(slog.DiscardHandler)
	}
	return c, nil
}

// Server is the DNS server of one network.
type Server struct {
	ttl      uint32
	log      *slog.Logger
	table    atomic.Pointer[Table]
	exchange func(context.Context, *dns.Msg) (*dns.Msg, error) // the upstream resolvers

	pc net.PacketConn
	ln net.Listener

	ctx      context.Context // cancelled by Close: forwards in flight give up
	cancel   context.CancelFunc
	wg       sync.WaitGroup
	forwards chan struct{} // semaphore of UDP forwards in flight
	tcpSlots chan struct{} // semaphore of open TCP connections

	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool

	closeOnce sync.Once
	closeErr  error

	lastUpstreamWarn atomic.Int64 // unix ns
}

// Serve starts serving table's network on pc (UDP) and ln (TCP), which
// the caller opened, typically on the gateway address inside the overlay
// namespace (dataplane.Overlay.ListenDNS). From then on the Server owns
// them and Close closes them; if Serve fails they are left to the caller.
// A nil table knows no names: every question is forwarded.
//
// Forwarded queries go out on sockets the Server's own goroutines create,
// so they leave from the namespace the process runs in (the host's), not
// from the one pc and ln live in. Serve may itself be called on a thread
// switched into another namespace: goroutines do not inherit that.
func Serve(cfg Config, table *Table, pc net.PacketConn, ln net.Listener) (*Server, error) {
	if pc == nil || ln == nil {
		return nil, errors.New("DNS server needs both a UDP and a TCP socket")
	}
	s, err := newServer(cfg, table, listenAddrs(pc.LocalAddr(), ln.Addr()))
	if err != nil {
		return nil, err
	}
	s.pc, s.ln = pc, ln
	s.wg.Add(2)
	go s.serveUDP()
	go s.serveTCP()
	return s, nil
}

// newServer is a Server without sockets: what Serve serves with, and what
// the fuzz test drives directly.
func newServer(cfg Config, table *Table, self []netip.Addr) (*Server, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	up := newUpstreamClient(newResolvers(cfg.ResolvConf, self, cfg.Log), cfg.UpstreamTimeout)
	if cfg.upstreamPort != 0 {
		up.port = cfg.upstreamPort
	}
	s := &Server{
		ttl:      uint32(cfg.TTL / time.Second),
		log:      cfg.Log,
		exchange: up.exchange,
		forwards: make(chan struct{}, maxForwards),
		tcpSlots: make(chan struct{}, maxTCPConns),
		conns:    make(map[net.Conn]struct{}),
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.table.Store(table)
	return s, nil
}

// listenAddrs are the specific addresses the server listens on: queries
// are never forwarded there.
func listenAddrs(addrs ...net.Addr) []netip.Addr {
	var out []netip.Addr
	for _, a := range addrs {
		ap, err := netip.ParseAddrPort(a.String())
		if err == nil && !ap.Addr().IsUnspecified() {
			out = append(out, ap.Addr().Unmap())
		}
	}
	return out
}

// SetTable makes t the table answers come from, atomically: a query sees
// the old table or the new one, never a mix. Safe for concurrent use.
func (s *Server) SetTable(t *Table) { s.table.Store(t) }

// Close stops serving, closes the sockets and waits until every query in
// flight is done (forwards are abandoned). It returns the sockets' close
// errors; calling it again returns the same.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		s.cancel()
		s.closeErr = errors.Join(s.pc.Close(), s.ln.Close())
		s.mu.Lock()
		s.closed = true
		for c := range s.conns {
			c.Close()
		}
		s.mu.Unlock()
		s.wg.Wait()
	})
	return s.closeErr
}

// pause waits a little after an unexpected socket error, so that a socket
// failing over and over does not spin; it reports false once the server is
// closing.
func (s *Server) pause() bool {
	t := time.NewTimer(50 * time.Millisecond)
	defer t.Stop()
	select {
	case <-s.ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

func (s *Server) serveUDP() {
	defer s.wg.Done()
	buf := make([]byte, dns.MaxMsgSize)
	for {
		n, addr, err := s.pc.ReadFrom(buf)
		if err != nil {
			if s.ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			s.log.Warn("DNS: reading a UDP query failed", "err", err)
			if !s.pause() {
				return
			}
			continue
		}
		reply, fwd := s.respond(buf[:n], false)
		if reply != nil {
			s.writeUDP(reply, addr)
		}
		if fwd == nil {
			continue
		}
		select {
		case s.forwards <- struct{}{}:
		default:
			s.log.Debug("DNS: too many queries being forwarded; dropping one", "client", addr.String())
			continue
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer func() { <-s.forwards }()
			if reply := s.forward(fwd); reply != nil {
				s.writeUDP(reply, addr)
			}
		}()
	}
}

func (s *Server) writeUDP(b []byte, addr net.Addr) {
	if _, err := s.pc.WriteTo(b, addr); err != nil && s.ctx.Err() == nil {
		s.log.Debug("DNS: sending a UDP answer failed", "client", addr.String(), "err", err)
	}
}

func (s *Server) serveTCP() {
	defer s.wg.Done()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			if s.ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			s.log.Warn("DNS: accepting a TCP connection failed", "err", err)
			if !s.pause() {
				return
			}
			continue
		}
		select {
		case s.tcpSlots <- struct{}{}:
		default:
			s.log.Debug("DNS: too many TCP connections; closing one", "client", c.RemoteAddr().String())
			c.Close()
			continue
		}
		if !s.track(c) {
			c.Close()
			<-s.tcpSlots
			return
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer func() { <-s.tcpSlots }()
			defer s.untrack(c)
			s.serveConn(c)
		}()
	}
}

// track registers an open connection for Close; false once closing.
func (s *Server) track(c net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.conns[c] = struct{}{}
	return true
}

func (s *Server) untrack(c net.Conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
	c.Close()
}

// serveConn answers the queries of one TCP connection in order (RFC 7766
// framing: a two-byte length before each message) until the client closes
// it, is idle for tcpIdleTimeout or sends something that is not a query.
func (s *Server) serveConn(c net.Conn) {
	var lenBuf [2]byte
	for {
		if err := c.SetDeadline(time.Now().Add(tcpIdleTimeout)); err != nil {
			return
		}
		if _, err := io.ReadFull(c, lenBuf[:]); err != nil {
			return
		}
		n := binary.BigEndian.Uint16(lenBuf[:])
		if n < headerLen || n > maxQueryLen {
			return // not a query; the framing cannot be trusted any further
		}
		msg := make([]byte, n)
		if _, err := io.ReadFull(c, msg); err != nil {
			return
		}
		reply, fwd := s.respond(msg, true)
		if fwd != nil {
			reply = s.forward(fwd)
		}
		if reply == nil {
			return
		}
		out := make([]byte, 2+len(reply))
		binary.BigEndian.PutUint16(out, uint16(len(reply)))
		copy(out[2:], reply)
		if _, err := c.Write(out); err != nil {
			return
		}
	}
}

// query is a question the upstream resolvers answer.
type query struct {
	msg   *dns.Msg
	opt   *dns.OPT // the client's EDNS record, if any
	limit int      // the largest reply the client takes on its transport
}

// respond handles one raw message from a client. It returns the reply to
// send, or the query to forward, or neither when the message is not worth
// an answer (too short for a header, or itself a response: answering
// responses could start a loop between two servers).
func (s *Server) respond(raw []byte, tcp bool) ([]byte, *query) {
	if len(raw) < headerLen || raw[2]&0x80 != 0 {
		return nil, nil
	}
	if len(raw) > maxQueryLen {
		return headerReply(raw, dns.RcodeFormatError), nil
	}
	req := new(dns.Msg)
	if err := req.Unpack(raw); err != nil {
		return headerReply(raw, dns.RcodeFormatError), nil
	}
	limit := dns.MaxMsgSize
	if !tcp {
		limit = dns.MinMsgSize
	}
	var opt *dns.OPT
	for _, rr := range req.Extra {
		if o, ok := rr.(*dns.OPT); ok {
			if opt != nil { // RFC 6891 6.1.1: more than one OPT is FORMERR
				return s.reply(req, nil, dns.RcodeFormatError, nil, limit), nil
			}
			opt = o
		}
	}
	if opt != nil && !tcp {
		limit = min(max(int(opt.UDPSize()), dns.MinMsgSize), ednsSize)
	}
	switch {
	case req.Opcode != dns.OpcodeQuery:
		return s.reply(req, opt, dns.RcodeNotImplemented, nil, limit), nil
	case len(req.Question) != 1:
		return s.reply(req, opt, dns.RcodeFormatError, nil, limit), nil
	case opt != nil && opt.Version() != 0:
		return s.reply(req, opt, dns.RcodeBadVers, nil, limit), nil
	}
	v, rrs := resolve(s.table.Load(), req.Question[0], s.ttl)
	switch v {
	case forward:
		return nil, &query{msg: req, opt: opt, limit: limit}
	case answer:
		// Shuffled, so that clients taking the first address spread over
		// the containers sharing an alias.
		rand.Shuffle(len(rrs), func(i, j int) { rrs[i], rrs[j] = rrs[j], rrs[i] })
		return s.reply(req, opt, dns.RcodeSuccess, rrs, limit), nil
	case nxdomain:
		return s.reply(req, opt, dns.RcodeNameError, nil, limit), nil
	default:
		return s.reply(req, opt, dns.RcodeRefused, nil, limit), nil
	}
}

// reply is the server's own answer to req. RA is always set: every name
// is resolved, the network's here and the rest through the upstream
// resolvers. AA is set on answers about the network's names.
func (s *Server) reply(req *dns.Msg, opt *dns.OPT, rcode int, answers []dns.RR, limit int) []byte {
	m := new(dns.Msg)
	m.SetReply(req)
	m.Rcode = rcode
	m.RecursionAvailable = true
	m.Authoritative = rcode == dns.RcodeSuccess || rcode == dns.RcodeNameError
	m.Answer = answers
	if opt != nil {
		m.SetEdns0(ednsSize, opt.Do())
	}
	return s.pack(m, limit)
}

// pack encodes m to fit in limit bytes, truncating it (TC set) if needed.
func (s *Server) pack(m *dns.Msg, limit int) []byte {
	m.Truncate(limit)
	b, err := m.Pack()
	if err != nil || len(b) > limit {
		s.log.Debug("DNS: cannot encode an answer; sending SERVFAIL", "question", questionText(m), "err", err, "len", len(b))
		f := &dns.Msg{MsgHdr: dns.MsgHdr{Id: m.Id, Response: true, Opcode: m.Opcode, Rcode: dns.RcodeServerFailure,
			RecursionDesired: m.RecursionDesired, RecursionAvailable: true}}
		if b, err = f.Pack(); err != nil {
			return nil
		}
	}
	return b
}

// headerReply is a bare header answering a message that cannot be parsed:
// same ID and opcode, the given rcode, no sections.
func headerReply(raw []byte, rcode int) []byte {
	b := make([]byte, headerLen)
	copy(b, raw[:2])
	b[2] = 0x80 | raw[2]&0x79 // QR, the query's opcode and RD
	b[3] = 0x80 | byte(rcode) // RA
	return b
}

// forward asks the upstream resolvers and returns their answer for the
// client, or SERVFAIL if none answers; nil when the server is closing.
func (s *Server) forward(q *query) []byte {
	r, err := s.exchange(s.ctx, q.msg)
	if err != nil {
		if s.ctx.Err() != nil {
			return nil
		}
		s.upstreamFailed(q, err)
		return s.reply(q.msg, q.opt, dns.RcodeServerFailure, nil, q.limit)
	}
	r.Id = q.msg.Id
	return s.pack(r, q.limit)
}

func (s *Server) upstreamFailed(q *query, err error) {
	now := time.Now().UnixNano()
	last := s.lastUpstreamWarn.Load()
	if now-last >= int64(upstreamWarnEvery) && s.lastUpstreamWarn.CompareAndSwap(last, now) {
		s.log.Warn("DNS: no upstream resolver answered; clients get SERVFAIL for names outside the network (repeats are logged at debug level for a minute)",
			"question", questionText(q.msg), "err", err)
		return
	}
	s.log.Debug("DNS: no upstream resolver answered", "question", questionText(q.msg), "err", err)
}

func questionText(m *dns.Msg) string {
	if len(m.Question) == 0 {
		return ""
	}
	q := m.Question[0]
	return q.Name + " " + dns.Type(q.Qtype).String()
}
