package engine

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vxovl/vxovl/internal/testutil/poll"
)

const wait = 5 * time.Second

func cid(n int) string { return fmt.Sprintf("%02d%s", n, strings.Repeat("c", 62)) }
func eid(n int) string { return fmt.Sprintf("%02d%s", n, strings.Repeat("e", 62)) }

// reported waits until rec has an update for endpoint with exactly names.
func reported(t *testing.T, rec *recorder, endpoint string, names ...string) Update {
	t.Helper()
	slices.Sort(names)
	var u Update
	poll.Until(t, wait, "names of endpoint "+shortID(endpoint), func() (bool, string) {
		var ok bool
		u, ok = rec.get(endpoint)
		if !ok {
			return false, "not reported; have " + strings.Join(rec.endpoints(), ",")
		}
		return slices.Equal(u.Names, names), fmt.Sprintf("names %v, want %v", u.Names, names)
	})
	return u
}

func TestResyncReportsEveryVxovlEndpoint(t *testing.T) {
	for _, version := range []string{"1.41", "1.44", "1.47"} {
		t.Run("API "+version, func(t *testing.T) {
			f := newFakeEngine(t, version)
			f.add(fakeContainer{ID: cid(1), Name: "web", Hostname: "web-host", Endpoints: []fakeEndpoint{
				{Network: vxNet, EndpointID: eid(1), Aliases: []string{"frontend", "Bad Alias"}},
				{Network: otherNet, EndpointID: eid(2)},
			}})
			f.add(fakeContainer{ID: cid(2), Name: "app_db_1", Hostname: cid(2)[:12], Endpoints: []fakeEndpoint{
				{Network: vxNet, EndpointID: eid(3), Aliases: []string{"db"}},
				{Network: vxNet2, EndpointID: eid(4)},
			}})
			f.add(fakeContainer{ID: cid(3), Name: "lone", Hostname: "lone", Endpoints: []fakeEndpoint{
				{Network: otherNet, EndpointID: eid(5)},
			}})
			before := time.Now()
			_, rec := startWatcher(t, f.socket)

			u := reported(t, rec, eid(1), "web", "web-host", "frontend", cid(1)[:12])
			if want := (Update{NetworkID: vxNet.ID, NetworkName: "app", EndpointID: eid(1), ContainerID: cid(1), Names: u.Names}); !equalUpdate(u, want) {
				t.Errorf("update = %+v, want %+v", u, want)
			}
			reported(t, rec, eid(3), "app_db_1", "db", cid(2)[:12])
			if u := reported(t, rec, eid(4), "app_db_1", cid(2)[:12]); u.NetworkName != "back" || u.NetworkID != vxNet2.ID {
				t.Errorf("second network's update = %+v", u)
			}
			// Both containers on vxovl networks are inspected; none other.
			poll.True(t, wait, "both inspects", func() bool { return f.count("/containers/"+cid(2)+"/json") == 1 })
			if got := rec.endpoints(); !slices.Equal(got, []string{eid(1), eid(3), eid(4)}) {
				t.Errorf("reported endpoints %v: only those on vxovl networks should be", got)
			}
			if n := f.count("/containers/" + cid(3) + "/json"); n != 0 {
				t.Errorf("a container on no vxovl network was inspected %d times", n)
			}

			// Subscribed before listing, asking for the events since just before.
			if r := f.requests(); len(r) < 2 || r[0] != "/events" || r[1] != "/containers/json" {
				t.Errorf("requests %v: want /events, then /containers/json", r)
			}
			f.mu.Lock()
			defer f.mu.Unlock()
			since, err := strconv.ParseFloat(f.since[0], 64)
			if err != nil || since > float64(before.Add(time.Second).UnixNano())/1e9 || since < float64(before.Add(-2*time.Second).UnixNano())/1e9 {
				t.Errorf("since=%q, want about %v", f.since[0], before)
			}
			if len(f.wrongPaths) > 0 {
				t.Errorf("requests without API version %s: %v", f.want, f.wrongPaths)
			}
		})
	}
}

func equalUpdate(a, b Update) bool {
	return a.NetworkID == b.NetworkID && a.NetworkName == b.NetworkName && a.EndpointID == b.EndpointID &&
		a.ContainerID == b.ContainerID && slices.Equal(a.Names, b.Names)
}

// oneWorker makes the watcher inspect containers one at a time, in the
// order of their events, so that a test can tell what it did not do.
func oneWorker(w *Watcher) { w.workers = 1 }

func TestEventsReportNewEndpoints(t *testing.T) {
	f := newFakeEngine(t, "1.41")
	for i, n := range []fakeNetwork{otherNet, otherNet, vxNet} {
		f.add(fakeContainer{ID: cid(3 + i), Name: fmt.Sprint("lone", i), Hostname: "lone", Endpoints: []fakeEndpoint{
			{Network: n, EndpointID: eid(5 + i)},
		}})
	}
	_, rec := startWatcher(t, f.socket, oneWorker)
	reported(t, rec, eid(7), "lone2", "lone", cid(5)[:12])

	// docker run: connect events, then start.
	f.start(fakeContainer{ID: cid(1), Name: "web", Hostname: "web", Endpoints: []fakeEndpoint{
		{Network: vxNet, EndpointID: eid(1), Aliases: []string{"web-svc"}},
	}})
	reported(t, rec, eid(1), "web", "web-svc", cid(1)[:12])

	// docker network connect: another driver's network is none of vxovl's business...
	f.connect(cid(3), fakeEndpoint{Network: otherNet, EndpointID: eid(10)})
	// ...a vxovl network is.
	f.connect(cid(4), fakeEndpoint{Network: vxNet2, EndpointID: eid(11), Aliases: []string{"late"}})
	reported(t, rec, eid(11), "lone1", "lone", "late", cid(4)[:12])
	if n := f.count("/containers/" + cid(3) + "/json"); n != 0 {
		t.Errorf("a container joining another driver's network was inspected %d times", n)
	}
	if got := rec.endpoints(); !slices.Equal(got, []string{eid(1), eid(7), eid(11)}) {
		t.Errorf("reported endpoints %v: only those on vxovl networks should be", got)
	}
}

func TestRenameUpdatesNames(t *testing.T) {
	f := newFakeEngine(t, "1.44")
	f.add(fakeContainer{ID: cid(1), Name: "old", Hostname: "h1", Endpoints: []fakeEndpoint{
		{Network: vxNet, EndpointID: eid(1)},
	}})
	_, rec := startWatcher(t, f.socket)
	reported(t, rec, eid(1), "old", "h1", cid(1)[:12])
	f.rename(cid(1), "new")
	reported(t, rec, eid(1), "new", "h1", cid(1)[:12])
}

func TestStreamBreakResubscribesAndResyncs(t *testing.T) {
	f := newFakeEngine(t, "1.41")
	f.add(fakeContainer{ID: cid(1), Name: "web", Hostname: "web", Endpoints: []fakeEndpoint{
		{Network: vxNet, EndpointID: eid(1)},
	}})
	_, rec := startWatcher(t, f.socket)
	reported(t, rec, eid(1), "web", cid(1)[:12])
	poll.True(t, wait, "the event stream", func() bool { return f.streamsOpen() == 1 })

	// dockerd restarts: the stream breaks and a container starts while the
	// watcher cannot subscribe, so it gets no event for it.
	f.setRefuseEvents(true)
	f.breakStreams()
	poll.True(t, wait, "a refused subscription", func() bool {
		f.mu.Lock()
		defer f.mu.Unlock()
		return len(f.eventsTried) >= 2
	})
	f.add(fakeContainer{ID: cid(2), Name: "db", Hostname: "dbhost", Endpoints: []fakeEndpoint{
		{Network: vxNet, EndpointID: eid(2), Aliases: []string{"database"}},
	}})
	f.setRefuseEvents(false)

	reported(t, rec, eid(2), "db", "dbhost", "database", cid(2)[:12])
	if n := f.count("/containers/json"); n != 2 {
		t.Errorf("%d resyncs, want 2", n)
	}
	// And it follows the new stream.
	poll.True(t, wait, "the new event stream", func() bool { return f.streamsOpen() == 1 })
	f.rename(cid(2), "db2")
	reported(t, rec, eid(2), "db2", "dbhost", "database", cid(2)[:12])
}

func TestMalformedEventLeadsToResync(t *testing.T) {
	f := newFakeEngine(t, "1.44")
	f.add(fakeContainer{ID: cid(1), Name: "web", Hostname: "web", Endpoints: []fakeEndpoint{
		{Network: vxNet, EndpointID: eid(1)},
	}})
	_, rec := startWatcher(t, f.socket)
	reported(t, rec, eid(1), "web", cid(1)[:12])
	poll.True(t, wait, "the event stream", func() bool { return f.streamsOpen() == 1 })

	f.emitRaw(`{"Type":"network","Action":"connect","Actor":` + "\n")
	f.emitRaw("]]]\n")
	poll.True(t, wait, "a second subscription and resync", func() bool {
		return f.subscriptions() == 2 && f.count("/containers/json") == 2 && f.streamsOpen() == 1
	})
	f.start(fakeContainer{ID: cid(2), Name: "db", Hostname: "db", Endpoints: []fakeEndpoint{
		{Network: vxNet, EndpointID: eid(2)},
	}})
	reported(t, rec, eid(2), "db", cid(2)[:12])
}

func TestFailedInspectIsRetried(t *testing.T) {
	f := newFakeEngine(t, "1.41")
	f.add(fakeContainer{ID: cid(1), Name: "web", Hostname: "web", Endpoints: []fakeEndpoint{
		{Network: vxNet, EndpointID: eid(1)},
	}})
	f.setBadInspects(cid(1), 2) // truncated JSON, twice
	_, rec := startWatcher(t, f.socket)
	reported(t, rec, eid(1), "web", cid(1)[:12])
	if n := f.count("/containers/" + cid(1) + "/json"); n != 3 {
		t.Errorf("%d inspects, want 3 (two bad answers, then a good one)", n)
	}
	if n := f.subscriptions(); n != 1 {
		t.Errorf("a bad inspect cost the event stream: %d subscriptions", n)
	}
}

func TestGoneContainerIsNotAnError(t *testing.T) {
	f := newFakeEngine(t, "1.41")
	w, rec := startWatcher(t, f.socket, oneWorker)
	poll.True(t, wait, "the event stream", func() bool { return f.streamsOpen() == 1 })
	// Started and removed before the watcher inspects it.
	f.emit("container", "start", cid(9), map[string]string{"name": "brief"})
	f.start(fakeContainer{ID: cid(1), Name: "web", Hostname: "web", Endpoints: []fakeEndpoint{
		{Network: vxNet, EndpointID: eid(1)},
	}})
	reported(t, rec, eid(1), "web", cid(1)[:12])
	if n := f.count("/containers/" + cid(9) + "/json"); n != 1 {
		t.Errorf("a gone container was inspected %d times, want once", n)
	}
	w.attemptsMu.Lock()
	defer w.attemptsMu.Unlock()
	if len(w.attempts) != 0 {
		t.Errorf("a gone container counts as a failure to retry: %v", w.attempts)
	}
}

func TestBacksOffWhileDockerdRefuses(t *testing.T) {
	f := newFakeEngine(t, "1.41")
	f.setRefuseEvents(true)
	w, _ := startWatcher(t, f.socket)
	const tries = 6
	poll.True(t, wait, fmt.Sprint(tries, " subscription attempts"), func() bool {
		f.mu.Lock()
		defer f.mu.Unlock()
		return len(f.eventsTried) >= tries
	})
	f.mu.Lock()
	tried := slices.Clone(f.eventsTried)
	f.mu.Unlock()
	// Each pause at least doubles, up to maxBackoff: never a spin.
	pause := w.minBackoff
	for i := 1; i < len(tried); i++ {
		if gap := tried[i].Sub(tried[i-1]); gap < pause {
			t.Errorf("attempt %d came %v after the one before, want at least %v", i+1, gap, pause)
		}
		pause = min(2*pause, w.maxBackoff)
	}
}

func TestTooOldDockerIsRefused(t *testing.T) {
	f := newFakeEngine(t, "1.40")
	startWatcher(t, f.socket)
	// It keeps pinging (dockerd may be upgraded) but asks nothing else.
	poll.True(t, wait, "three pings", func() bool {
		f.mu.Lock()
		defer f.mu.Unlock()
		return f.pings >= 3
	})
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.log) > 0 || len(f.wrongPaths) > 0 {
		t.Errorf("asked a dockerd with API 1.40: %v %v", f.log, f.wrongPaths)
	}
}

func TestNewChecksConfig(t *testing.T) {
	rec := &recorder{}
	for _, c := range []Config{
		{Managed: managed, Sink: rec},
		{Socket: "/run/docker.sock", Sink: rec},
		{Socket: "/run/docker.sock", Managed: managed},
	} {
		if _, err := New(c); err == nil {
			t.Errorf("New(%+v) accepted", c)
		}
	}
	if _, err := New(Config{Socket: "/run/docker.sock", Managed: managed, Sink: rec}); err != nil {
		t.Error(err)
	}
}

// A network this host has no container on is named too: at the resync, and
// when it is created.
func TestNetworksAreNamedWithoutContainers(t *testing.T) {
	f := newFakeEngine(t, "1.41")
	_, rec := startWatcher(t, f.socket)
	poll.True(t, 5*time.Second, "vxNet named by the resync", func() bool { return rec.networkName(vxNet.ID) == "app" })
	f.createNetwork(vxNet2)
	poll.True(t, 5*time.Second, "vxNet2 named when created", func() bool { return rec.networkName(vxNet2.ID) == "back" })
	if name := rec.networkName(otherNet.ID); name != "" {
		t.Fatalf("a network vxovl does not drive was named: %q", name)
	}
}
