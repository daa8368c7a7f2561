package e2e

import (
	"bytes"
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestIPAMConcurrentRuns: three lab hosts each start 20 containers at once
// on one overlay that uses the vxovl IPAM. All 60 get distinct addresses
// from the subnet, and every container reaches one container on each other
// host.
//
// It drives examples/lab/lab.sh in its own lab (LAB_NAME vxipam, underlay
// 10.96.0.0/24) so it can run next to other labs. Gate: VXOVL_E2E=1; needs
// root, dockerd and `make plugin`.
func TestIPAMConcurrentRuns(t *testing.T) {
	lab := ipamLabStart(t, 3)
	const perHost = 20
	hosts := []int{1, 2, 3}
	for _, h := range hosts {
		lab.docker(t, h, "network", "create", "-d", "vxovl:latest", "--ipam-driver", "vxovl:latest",
			"--subnet", "10.50.0.0/24", "-o", "vni=5050", "ipamnet")
	}

	// 60 concurrent `docker run`, 20 per host.
	var wg sync.WaitGroup
	errs := make(chan error, len(hosts)*perHost)
	for _, h := range hosts {
		for j := range perHost {
			wg.Go(func() {
				name := fmt.Sprintf("ip-h%d-%02d", h, j)
				if _, err := lab.run(h, "run", "-d", "--net", "ipamnet", "--name", name, "vxovl/busybox", "sleep", "3600"); err != nil {
					errs <- fmt.Errorf("host %d %s: %w", h, name, err)
				}
			})
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if t.Failed() {
		t.FailNow()
	}

	subnet := netip.MustParsePrefix("10.50.0.0/24")
	ips := map[int][]netip.Addr{}
	names := map[netip.Addr]string{}
	for _, h := range hosts {
		for j := range perHost {
			name := fmt.Sprintf("ip-h%d-%02d", h, j)
			out := lab.docker(t, h, "inspect", "-f", `{{(index .NetworkSettings.Networks "ipamnet").IPAddress}}`, name)
			a, err := netip.ParseAddr(strings.TrimSpace(out))
			if err != nil || !subnet.Contains(a) || a == netip.MustParseAddr("10.50.0.1") {
				t.Fatalf("%s on host %d got address %q", name, h, out)
			}
			if other, dup := names[a]; dup {
				t.Errorf("DUPLICATE: %s on host %d and %s both have %s", name, h, other, a)
			}
			names[a] = fmt.Sprintf("%s(h%d)", name, h)
			ips[h] = append(ips[h], a)
		}
	}
	if len(names) != len(hosts)*perHost {
		t.Fatalf("%d distinct addresses for %d containers", len(names), len(hosts)*perHost)
	}
	t.Logf("%d containers, %d distinct addresses", len(hosts)*perHost, len(names))

	// Every container pings one container on each other host (120 pings),
	// at most 12 at a time; each ping is retried until the overlay has
	// converged or the deadline passes.
	type probe struct {
		host int
		name string
		dst  netip.Addr
	}
	var probes []probe
	for _, h := range hosts {
		for j := range perHost {
			for _, o := range hosts {
				if o != h {
					probes = append(probes, probe{h, fmt.Sprintf("ip-h%d-%02d", h, j), ips[o][(j+o)%perHost]})
				}
			}
		}
	}
	sem := make(chan struct{}, 12)
	var mu sync.Mutex
	var failed []string
	deadline := time.Now().Add(60 * time.Second)
	for _, p := range probes {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			for {
				_, err := lab.run(p.host, "exec", p.name, "ping", "-c1", "-W1", p.dst.String())
				if err == nil {
					return
				}
				if time.Now().After(deadline) {
					mu.Lock()
					failed = append(failed, fmt.Sprintf("%s(h%d) -> %s (%s): %v", p.name, p.host, p.dst, names[p.dst], err))
					mu.Unlock()
					return
				}
				time.Sleep(200 * time.Millisecond) // retry pacing, not synchronisation: the loop polls a condition
			}
		})
	}
	wg.Wait()
	if len(failed) > 0 {
		t.Fatalf("%d of %d cross-host pings failed, e.g.:\n%s", len(failed), len(probes), strings.Join(failed[:min(len(failed), 10)], "\n"))
	}
	t.Logf("%d cross-host pings succeeded", len(probes))

	// Removing containers releases their addresses: a new container on
	// host 1 may reuse one, and the network can be removed afterwards.
	for j := range perHost {
		lab.docker(t, 1, "rm", "-f", fmt.Sprintf("ip-h1-%02d", j))
	}
	lab.docker(t, 1, "run", "-d", "--net", "ipamnet", "--name", "ip-h1-again", "vxovl/busybox", "sleep", "3600")
	out := lab.docker(t, 1, "inspect", "-f", `{{(index .NetworkSettings.Networks "ipamnet").IPAddress}}`, "ip-h1-again")
	if a, err := netip.ParseAddr(strings.TrimSpace(out)); err != nil || names[a] != "" && !strings.HasSuffix(names[a], "(h1)") {
		t.Fatalf("new container on host 1 got %q, which belongs to %s", out, names[a])
	}
}

type ipamLab struct {
	script string
	env    []string
}

// ipamLabStart brings up a private lab of n hosts with vxovl installed and
// tears it down at the end, also on failure.
func ipamLabStart(t *testing.T, n int) *ipamLab {
	t.Helper()
	if os.Getenv("VXOVL_E2E") != "1" {
		t.Skip("lab e2e test: set VXOVL_E2E=1 (root, dockerd, make plugin)")
	}
	if os.Geteuid() != 0 {
		t.Skip("lab e2e test needs root")
	}
	_, file, _, _ := runtime.Caller(0)
	root := filepath.Join(filepath.Dir(file), "..", "..")
	if _, err := os.Stat(filepath.Join(root, "build", "plugin", "config.json")); err != nil {
		t.Fatalf("the plugin is not built: run make plugin (%v)", err)
	}
	l := &ipamLab{
		script: filepath.Join(root, "examples", "lab", "lab.sh"),
		env:    append(os.Environ(), "LAB_NAME=vxipam", "LAB_SUBNET=10.96.0", "LAB_REGISTRY="),
	}
	_, _ = l.sh("down") // a previous run killed midway
	t.Cleanup(func() {
		if t.Failed() {
			for i := 1; i <= n; i++ {
				out, _ := l.run(i, "plugin", "inspect", "-f", "{{.Enabled}}", "vxovl")
				t.Logf("host %d plugin enabled: %s (logs under /tmp/vxipam/h%d)", i, strings.TrimSpace(out), i)
			}
		}
		if out, err := l.sh("down"); err != nil {
			t.Errorf("lab down: %v\n%s", err, out)
		}
	})
	if out, err := l.sh("up", fmt.Sprint(n)); err != nil {
		t.Fatalf("lab up: %v\n%s", err, out)
	}
	var peers []string
	for i := 1; i <= n; i++ {
		peers = append(peers, fmt.Sprintf("10.96.0.%d", i))
	}
	for i := 1; i <= n; i++ {
		if out, err := l.sh("install-plugin", fmt.Sprint(i), "PEERS="+strings.Join(peers, ","),
			fmt.Sprintf("NODE_NAME=h%d", i), "DEAD_TIMEOUT=3s"); err != nil {
			t.Fatalf("install plugin on host %d: %v\n%s", i, err, out)
		}
	}
	return l
}

func (l *ipamLab) sh(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, l.script, args...)
	cmd.Env = l.env
	var b bytes.Buffer
	cmd.Stdout, cmd.Stderr = &b, &b
	err := cmd.Run()
	return b.String(), err
}

// run is `docker ARGS` against lab host i.
func (l *ipamLab) run(i int, args ...string) (string, error) {
	out, err := l.sh(append([]string{"docker", fmt.Sprint(i)}, args...)...)
	if err != nil {
		return out, fmt.Errorf("docker %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(out))
	}
	return out, nil
}

func (l *ipamLab) docker(t *testing.T, i int, args ...string) string {
	t.Helper()
	out, err := l.run(i, args...)
	if err != nil {
		t.Fatalf("host %d: %v", i, err)
	}
	return out
}
