package e2e

import (
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/vxovl/vxovl/internal/testutil/poll"
)

// Service discovery across hosts (issue 10): every vxovl network runs a name server on its
// gateway address, and a container started with --dns <gateway> resolves the containers of
// every host through Docker's embedded DNS, which answers its own host's names and forwards the
// rest there.

const (
	dnsNet     = "app"
	dnsSubnet  = "10.232.0.0/24"
	dnsGateway = "10.232.0.1"
	// dnsOffNet is a second network created with -o dns=false.
	dnsOffNet     = "quiet"
	dnsOffSubnet  = "10.233.0.0/24"
	dnsOffGateway = "10.233.0.1"
	// embeddedDNS is Docker's resolver inside every container on a user-defined network: what
	// the container's resolv.conf names.
	embeddedDNS = "127.0.0.11"
)

// TestDNS runs the service discovery scenario on three Docker 20.10 hosts.
func TestDNS(t *testing.T) {
	l := Up(t, 3)
	for i := 1; i <= 3; i++ {
		l.InstallPlugin(t, i, "PEERS="+l.PeersExcept(i))
	}
	dnsScenario(t, l)
}

// TestDNSDocker26 runs the same scenario on three Docker 26 hosts, whose embedded DNS is a
// rewrite of 20.10's.
func TestDNSDocker26(t *testing.T) {
	l := UpWith(t, 3, Options{Docker: Docker26})
	for i := 1; i <= 3; i++ {
		l.InstallPlugin(t, i, "PEERS="+l.PeersExcept(i))
	}
	dnsScenario(t, l)
}

// dnsScenario needs a lab of 3 hosts with vxovl installed and peered. Network "app" exists on
// every host; "web" (host 2) and "web3" (host 3) serve HTTP and share the alias "svc"; "client"
// on host 1 asks. Every container lists the gateway as its DNS server.
func dnsScenario(t *testing.T, l *Lab) {
	for i := 1; i <= 3; i++ {
		l.MustDocker(t, i, "network", "create", "-d", Driver, "--ipam-driver", Driver,
			"--subnet", dnsSubnet, "--gateway", dnsGateway, dnsNet)
	}
	l.runHTTPD(t, 2, "web", dnsNet, "--dns", dnsGateway, "--network-alias", "svc")
	l.runHTTPD(t, 3, "web3", dnsNet, "--dns", dnsGateway, "--network-alias", "svc")
	l.MustDocker(t, 1, "run", "-d", "--name", "client", "--dns", dnsGateway, "--network", dnsNet,
		"vxovl/busybox", "sleep", "600")
	web := netip.MustParseAddr(l.ContainerIP(t, 2, "web", dnsNet))
	web3 := netip.MustParseAddr(l.ContainerIP(t, 3, "web3", dnsNet))
	client := l.containerNetns(t, 1, "client")

	t.Run("name and name.network of another host, then HTTP by name", func(t *testing.T) {
		for _, name := range []string{"web", "web." + dnsNet} {
			took := poll.Until(t, 30*time.Second, "client on host 1: nslookup "+name, func() (bool, string) {
				out, err := l.Docker(t, 1, "exec", "client", "nslookup", name)
				got := nslookupAddrs(out)
				return err == nil && slices.Equal(got, []netip.Addr{web}), fmt.Sprintf("addresses %v, want [%v] (%v):\n%s", got, web, err, out)
			})
			t.Logf("nslookup %s from host 1 answered %v after %v", name, web, took.Round(time.Millisecond))
		}
		poll.Until(t, 15*time.Second, "client on host 1 fetches http://web/", func() (bool, string) {
			out, err := l.Docker(t, 1, "exec", "client", "timeout", "3", "wget", "-qO-", "http://web/")
			return err == nil && strings.TrimSpace(out) == "web", fmt.Sprintf("%v: %q", err, out)
		})
	})

	t.Run("alias held on two other hosts", func(t *testing.T) {
		want := sortedAddrList(web, web3)
		took := poll.Until(t, 15*time.Second, "svc from host 1 names web and web3", func() (bool, string) {
			got, why := addrsOf(queryFrom(client, embeddedDNS, "svc", dns.TypeA))
			return slices.Equal(got, want), fmt.Sprintf("%v, want %v %s", got, want, why)
		})
		t.Logf("svc answered %v after %v", want, took.Round(time.Millisecond))
		// On a host that holds the alias, Docker answers it alone with its own holder;
		// tasks.svc reaches vxovl and names every holder.
		web3ns := l.containerNetns(t, 3, "web3")
		poll.Until(t, 15*time.Second, "tasks.svc from host 3 names web and web3", func() (bool, string) {
			got, why := addrsOf(queryFrom(web3ns, embeddedDNS, "tasks.svc", dns.TypeA))
			return slices.Equal(got, want), fmt.Sprintf("%v, want %v %s", got, want, why)
		})
		// Answers live about as long as a removal takes to arrive (dnsserver: TTL 1s).
		m, err := queryFrom(client, embeddedDNS, "svc", dns.TypeA)
		if err != nil {
			t.Fatal(err)
		}
		for _, rr := range m.Answer {
			if rr.Header().Ttl != 1 {
				t.Errorf("TTL %d, want 1: %v", rr.Header().Ttl, rr)
			}
		}
	})

	t.Run("removed container leaves the answer within 2s", func(t *testing.T) {
		start := time.Now()
		l.MustDocker(t, 3, "rm", "-f", "web3")
		rm := time.Since(start)
		took := poll.Until(t, 2*time.Second, "svc from host 1 names web only", func() (bool, string) {
			got, why := addrsOf(queryFrom(client, embeddedDNS, "svc", dns.TypeA))
			return slices.Equal(got, []netip.Addr{web}), fmt.Sprintf("%v, want [%v] %s", got, web, why)
		})
		t.Logf("docker rm -f web3 took %v; svc named web only %v after it returned (%v after it began)",
			rm.Round(time.Millisecond), took.Round(time.Millisecond), (rm + took).Round(time.Millisecond))
	})

	t.Run("other names go to the host's resolvers", func(t *testing.T) {
		up := l.ServeDNS(t, map[string]string{"ext.lab.test": "10.1.2.3"})
		poll.Until(t, 15*time.Second, "client on host 1: nslookup ext.lab.test", func() (bool, string) {
			out, err := l.Docker(t, 1, "exec", "client", "nslookup", "-type=a", "ext.lab.test")
			got := nslookupAddrs(out)
			return err == nil && slices.Equal(got, []netip.Addr{netip.MustParseAddr("10.1.2.3")}), fmt.Sprintf("%v (%v):\n%s", got, err, out)
		})
		// The container's only DNS server is the gateway, and the name servers forward from
		// their host's namespace: the upstream hears host 1, not the container.
		var asked []DNSQuery
		for _, q := range up.Queries() {
			if q.Name == "ext.lab.test." {
				asked = append(asked, q)
			}
		}
		if !slices.ContainsFunc(asked, func(q DNSQuery) bool { return q.From.String() == l.Addr(1) }) {
			t.Errorf("the fake upstream never heard host 1 (%s) ask for ext.lab.test: %v", l.Addr(1), up.Queries())
		}
	})

	t.Run("AAAA of a name is empty, an unknown name.network does not exist", func(t *testing.T) {
		for _, tc := range []struct {
			name  string
			qtype uint16
			rcode int
		}{
			{"web", dns.TypeAAAA, dns.RcodeSuccess},
			{"web." + dnsNet, dns.TypeAAAA, dns.RcodeSuccess},
			{"nosuch." + dnsNet, dns.TypeA, dns.RcodeNameError},
			{"nosuch." + dnsNet, dns.TypeAAAA, dns.RcodeNameError},
		} {
			what := fmt.Sprintf("%s %s from host 1", dns.TypeToString[tc.qtype], tc.name)
			poll.Until(t, 5*time.Second, what+" answers "+dns.RcodeToString[tc.rcode]+" with no records", func() (bool, string) {
				m, err := queryFrom(client, embeddedDNS, tc.name, tc.qtype)
				if err != nil {
					return false, err.Error()
				}
				return m.Rcode == tc.rcode && len(m.Answer) == 0, m.String()
			})
		}
		// Reverse lookups of the subnet: web's address names web.<network>.
		ptr, err := dns.ReverseAddr(web.String())
		if err != nil {
			t.Fatal(err)
		}
		poll.Until(t, 5*time.Second, "PTR of web's address from host 1 names web."+dnsNet, func() (bool, string) {
			m, err := queryFrom(client, embeddedDNS, ptr, dns.TypePTR)
			if err != nil {
				return false, err.Error()
			}
			return slices.ContainsFunc(m.Answer, func(rr dns.RR) bool {
				p, ok := rr.(*dns.PTR)
				return ok && p.Ptr == "web."+dnsNet+"."
			}), m.String()
		})
		// The same as a user sees it.
		if out, err := l.Docker(t, 1, "exec", "client", "nslookup", "-type=aaaa", "web"); err != nil || strings.Contains(out, "NXDOMAIN") {
			t.Errorf("nslookup -type=aaaa web: %v\n%s", err, out)
		}
		if out, err := l.Docker(t, 1, "exec", "client", "nslookup", "nosuch."+dnsNet); err == nil || !strings.Contains(out, "NXDOMAIN") {
			t.Errorf("nslookup nosuch.%s: want NXDOMAIN, got %v\n%s", dnsNet, err, out)
		}
	})

	t.Run("no name server with -o dns=false", func(t *testing.T) {
		l.MustDocker(t, 1, "network", "create", "-d", Driver, "--ipam-driver", Driver,
			"--subnet", dnsOffSubnet, "--gateway", dnsOffGateway, "-o", "dns=false", dnsOffNet)
		l.MustDocker(t, 1, "run", "-d", "--name", "quiet", "--network", dnsOffNet, "vxovl/busybox", "sleep", "600")
		quiet := l.containerNetns(t, 1, "quiet")
		// The control: the same direct question to app's gateway is answered.
		if m, err := queryFrom(client, dnsGateway, "web", dns.TypeA); err != nil || m.Rcode != dns.RcodeSuccess {
			t.Fatalf("the name server on %s does not answer a direct question: %v %v", dnsGateway, m, err)
		}
		// The gateway itself is there: pings are answered.
		poll.Until(t, 10*time.Second, "quiet pings its gateway", func() (bool, string) {
			out, err := l.Docker(t, 1, "exec", "quiet", "ping", "-c1", "-W1", dnsOffGateway)
			return err == nil, out
		})
		if m, err := queryFrom(quiet, dnsOffGateway, "web", dns.TypeA); err == nil {
			t.Errorf("a name server answers on %s of a dns=false network:\n%v", dnsOffGateway, m)
		} else {
			t.Logf("UDP question to %s:53: %v", dnsOffGateway, err)
		}
		if c, err := dialIn(quiet, "tcp4", net.JoinHostPort(dnsOffGateway, "53"), time.Second); err == nil {
			c.Close()
			t.Errorf("something accepts TCP on %s:53 of a dns=false network", dnsOffGateway)
		}
	})

	t.Run("names resolve again after kill -9 of the plugin", func(t *testing.T) {
		old := l.pluginPID(t, 1)
		if err := syscall.Kill(old, syscall.SIGKILL); err != nil {
			t.Fatalf("kill -9 plugin of host 1 (pid %d): %v", old, err)
		}
		killed := time.Now()
		var restarted time.Duration
		took := poll.Until(t, 15*time.Second, "web from host 1 after kill -9 of its plugin", func() (bool, string) {
			if pid, err := l.findPluginPID(1); err != nil || pid == old {
				return false, fmt.Sprintf("plugin pid %d (%v), killed %d", pid, err, old)
			}
			if restarted == 0 {
				restarted = time.Since(killed)
			}
			got, why := addrsOf(queryFrom(client, embeddedDNS, "web", dns.TypeA))
			return slices.Equal(got, []netip.Addr{web}), fmt.Sprintf("%v, want [%v] %s", got, web, why)
		})
		t.Logf("after kill -9 of host 1's plugin: a new plugin process after %v, web resolved from host 1 again after %v",
			restarted.Round(time.Millisecond), took.Round(time.Millisecond))
	})
}

// runHTTPD starts container name on host i serving its own name at http://name/.
func (l *Lab) runHTTPD(t testing.TB, i int, name, network string, flags ...string) {
	t.Helper()
	args := append([]string{"run", "-d", "--name", name, "--network", network}, flags...)
	l.MustDocker(t, i, append(args, "vxovl/busybox", "sh", "-c",
		"mkdir -p /www && echo "+name+" >/www/index.html && exec httpd -f -p 80 -h /www")...)
}

// containerNetns is the path of container c's network namespace (host i's dockerd shares the
// machine's pid namespace).
func (l *Lab) containerNetns(t testing.TB, i int, c string) string {
	t.Helper()
	pid := l.MustDocker(t, i, "inspect", "-f", "{{.State.Pid}}", c)
	if n, err := strconv.Atoi(pid); err != nil || n <= 0 {
		t.Fatalf("container %s on host %d: pid %q", c, i, pid)
	}
	return "/proc/" + pid + "/ns/net"
}

// queryFrom asks server (port 53, UDP) one question from inside the network namespace at nsPath,
// as a process in that container would: to embeddedDNS, Docker's resolver answers or forwards.
func queryFrom(nsPath, server, name string, qtype uint16) (*dns.Msg, error) {
	const timeout = time.Second
	conn, err := dialIn(nsPath, "udp4", net.JoinHostPort(server, "53"), timeout)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	q := new(dns.Msg)
	q.SetQuestion(dns.Fqdn(name), qtype)
	c := dns.Client{Timeout: timeout}
	m, _, err := c.ExchangeWithConn(q, &dns.Conn{Conn: conn})
	if err != nil {
		return nil, fmt.Errorf("%s %s to %s: %w", dns.TypeToString[qtype], name, server, err)
	}
	return m, nil
}

// addrsOf lists an answer's A records, sorted, and says why when it is not a plain answer.
func addrsOf(m *dns.Msg, err error) ([]netip.Addr, string) {
	if err != nil {
		return nil, "(" + err.Error() + ")"
	}
	var as []netip.Addr
	for _, rr := range m.Answer {
		if a, ok := rr.(*dns.A); ok {
			ip, _ := netip.AddrFromSlice(a.A.To4())
			as = append(as, ip)
		}
	}
	slices.SortFunc(as, netip.Addr.Compare)
	if m.Rcode != dns.RcodeSuccess {
		return as, "(" + dns.RcodeToString[m.Rcode] + ")"
	}
	return as, ""
}

func sortedAddrList(as ...netip.Addr) []netip.Addr {
	s := slices.Clone(as)
	slices.SortFunc(s, netip.Addr.Compare)
	return s
}

// nslookupAddrs lists, sorted, the addresses busybox nslookup printed for the name (its
// "Address: IP" lines; the server's own line is "Address: IP:53").
func nslookupAddrs(out string) []netip.Addr {
	var as []netip.Addr
	for _, line := range strings.Split(out, "\n") {
		v, ok := strings.CutPrefix(strings.TrimSpace(line), "Address:")
		if !ok {
			continue
		}
		if a, err := netip.ParseAddr(strings.TrimSpace(v)); err == nil {
			as = append(as, a)
		}
	}
	slices.SortFunc(as, netip.Addr.Compare)
	return as
}
