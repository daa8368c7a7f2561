package engine

import (
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/vxovl/vxovl/internal/testutil/poll"
)

// TestAgainstDockerd runs the watcher against a real dockerd, whose API
// socket VXOVL_ENGINE_DOCKER_SOCKET names (a lab host's, e.g.
// /tmp/vxlab/h1/docker.sock after examples/lab/lab.sh up 1), with bridge
// networks standing in for vxovl's: what it checks is what dockerd tells.
// It needs the lab's vxovl/busybox image.
func TestAgainstDockerd(t *testing.T) {
	sock := os.Getenv("VXOVL_ENGINE_DOCKER_SOCKET")
	if sock == "" {
		t.Skip("VXOVL_ENGINE_DOCKER_SOCKET is not set")
	}
	docker := func(args ...string) string {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		out, err := exec.CommandContext(ctx, "docker", append([]string{"-H", "unix://" + sock}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("docker %s: %v: %s", strings.Join(args, " "), err, out)
		}
		return strings.TrimSpace(string(out))
	}
	cleanup := func() {
		for _, args := range [][]string{
			{"rm", "-f", "engtest-web", "engtest-web2", "engtest-db"},
			{"network", "rm", "engtest-a", "engtest-b", "engtest-other"},
		} {
			_ = exec.Command("docker", append([]string{"-H", "unix://" + sock}, args...)...).Run()
		}
	}
	cleanup()
	t.Cleanup(cleanup)

	netA := docker("network", "create", "engtest-a")
	netB := docker("network", "create", "engtest-b")
	docker("network", "create", "engtest-other")
	ours := func(id string) bool { return id == netA || id == netB }

	// A container running before the watcher starts: found by the resync.
	web := docker("run", "-d", "--name", "engtest-web", "--hostname", "webhost", "--network", "engtest-a",
		"--network-alias", "frontend", "vxovl/busybox", "sleep", "600")

	_, rec := startWatcher(t, sock, func(w *Watcher) { w.cfg.Managed = ours })

	endpoint := func(container, network string) string {
		return docker("inspect", "-f", "{{(index .NetworkSettings.Networks \""+network+"\").EndpointID}}", container)
	}
	reported(t, rec, endpoint("engtest-web", "engtest-a"), "engtest-web", "frontend", "webhost", web[:12])

	// docker run after the watcher started: connect and start events.
	db := docker("run", "-d", "--name", "engtest-db", "--network", "engtest-b", "--network-alias", "database",
		"vxovl/busybox", "sleep", "600")
	reported(t, rec, endpoint("engtest-db", "engtest-b"), "engtest-db", "database", db[:12])

	// docker network connect on a running container, with an alias.
	docker("network", "connect", "--alias", "web-b", "engtest-b", "engtest-web")
	reported(t, rec, endpoint("engtest-web", "engtest-b"), "engtest-web", "web-b", "webhost", web[:12])

	// Another driver's network is not reported.
	docker("network", "connect", "engtest-other", "engtest-db")
	other := endpoint("engtest-db", "engtest-other")

	// docker rename.
	docker("rename", "engtest-web", "engtest-web2")
	reported(t, rec, endpoint("engtest-web2", "engtest-a"), "engtest-web2", "frontend", "webhost", web[:12])
	reported(t, rec, endpoint("engtest-web2", "engtest-b"), "engtest-web2", "web-b", "webhost", web[:12])
	if _, ok := rec.get(other); ok {
		t.Error("an endpoint on an unmanaged network was reported")
	}

	// A restart gives new endpoints: reported too.
	docker("restart", "-t", "0", "engtest-db")
	poll.True(t, wait, "the restarted container's new endpoint", func() bool {
		_, ok := rec.get(endpoint("engtest-db", "engtest-b"))
		return ok
	})
}
