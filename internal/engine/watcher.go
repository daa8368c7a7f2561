// Package engine learns the DNS names of the containers on vxovl networks
// from the Docker Engine API. A remote network driver is never told them:
// CreateEndpoint and Join carry only IDs and addresses. dockerd's API has
// them: the network connect event names the container joining a network,
// and the container's inspect gives its name, hostname and, per network,
// the endpoint ID and aliases (and DNSNames from API 1.44).
//
// The Watcher subscribes to those events, then lists and inspects every
// running container on a vxovl network; when the event stream breaks it
// subscribes and resyncs again, so nothing that happened while it was down
// is missed.
package engine

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"
)

// Sink receives what the watcher learns.
type Sink interface {
	// EndpointNames reports an endpoint's complete set of names. Updates
	// repeat (every resync reports every endpoint again): an unchanged one
	// must be a no-op. An update can also arrive just after Docker deleted
	// the endpoint: one for an endpoint the sink does not have must be
	// ignored. Called from several goroutines, never concurrently for one
	// container.
	EndpointNames(u Update)
}

// Config is what a Watcher needs.
type Config struct {
	// Socket is the path of dockerd's API socket (the host's docker.sock,
	// bind-mounted into the plugin).
	Socket string
	// Managed reports whether vxovl drives the Docker network with this ID:
	// only endpoints on such networks are reported. The driver knows its
	// networks by ID whatever name the plugin was installed under, so it
	// answers this better than a driver name could; start the watcher after
	// the driver restored its state. Called from several goroutines.
	Managed func(networkID string) bool
	Sink    Sink
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

// Watcher keeps a Sink told the DNS names of every endpoint on a vxovl
// network. Make one with New and start it with Run.
type Watcher struct {
	cfg    Config
	log    *slog.Logger
	client *client
	queue  *queue

	// Tests shorten these.
	workers     int           // containers inspected at once
	minBackoff  time.Duration // first pause after the stream breaks, and before retrying an inspect
	maxBackoff  time.Duration // longest such pause
	healthy     time.Duration // a stream that lasted this long resets the pause to minBackoff
	maxAttempts int           // inspects of one container that fail in a row before it waits for its next event

	attemptsMu sync.Mutex
	attempts   map[string]int // container ID -> inspects failed in a row

	// created holds the names of managed networks whose create event was
	// read, by queue key, until a worker reports them (the event reader
	// only queues).
	createdMu sync.Mutex
	created   map[string]Update
}

// networkKey is the queue's key for a network's name, beside container IDs.
func networkKey(id string) string { return "network:" + id }

// callTimeout bounds every call to dockerd but the event stream's body. An
// inspect waits for the container's lock, which dockerd holds while it
// starts the container.
const callTimeout = 15 * time.Second

// New checks cfg and makes a Watcher.
func New(cfg Config) (*Watcher, error) {
	switch {
	case cfg.Socket == "":
		return nil, errors.New("engine watcher: no Docker API socket given")
	case cfg.Managed == nil:
		return nil, errors.New("engine watcher: no Managed function given")
	case cfg.Sink == nil:
		return nil, errors.New("engine watcher: no Sink given")
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	return &Watcher{
		cfg:         cfg,
		log:         log,
		client:      newClient(cfg.Socket, callTimeout),
		queue:       newQueue(),
		workers:     4,
		minBackoff:  250 * time.Millisecond,
		maxBackoff:  30 * time.Second,
		healthy:     time.Minute,
		maxAttempts: 5,
		attempts:    map[string]int{},
		created:     map[string]Update{},
	}, nil
}

// Run watches dockerd until ctx ends. It retries for ever, with pauses of
// up to 30 s, while dockerd is unreachable or misbehaves.
func (w *Watcher) Run(ctx context.Context) {
	var wg sync.WaitGroup
	defer wg.Wait()
	for range w.workers {
		wg.Go(func() { w.work(ctx) })
	}
	pause := w.minBackoff
	for {
		began := time.Now()
		err := w.session(ctx)
		if ctx.Err() != nil {
			return
		}
		if time.Since(began) >= w.healthy {
			pause = w.minBackoff
		}
		w.log.Warn("not following Docker's events; will subscribe and resync container names again",
			"socket", w.cfg.Socket, "err", err, "retry_in", pause)
		if !sleep(ctx, pause) {
			return
		}
		pause = min(2*pause, w.maxBackoff)
	}
}

// sinceMargin is how far before subscribing the event stream starts: the
// plugin and dockerd share a clock, the margin only absorbs rounding.
// Events seen twice are harmless; a missed one is not.
const sinceMargin = time.Second

// session subscribes to events, then resyncs, then follows the stream
// until it breaks. It returns why it ended.
func (w *Watcher) session(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	version, err := w.client.negotiate(ctx)
	if err != nil {
		return err
	}
	stream, err := w.client.events(ctx, time.Now().Add(-sinceMargin))
	if err != nil {
		return fmt.Errorf("subscribing to events: %w", err)
	}
	// Read events while resyncing: dockerd drops events for a subscriber
	// that falls behind, and reading only queues work.
	streamErr := make(chan error, 1)
	go func() { streamErr <- w.follow(stream) }()
	defer stream.Close()

	ids, running, err := w.client.listManaged(ctx, w.cfg.Managed)
	if err != nil {
		cancel() // closes the stream's connection, ending the read
		<-streamErr
		return err
	}
	for _, id := range ids {
		w.queue.add(id)
	}
	// A network this host has no container on is named too: it is how the
	// operator knows it (its ID differs from host to host).
	nets, err := w.client.listNetworks(ctx, w.cfg.Managed)
	if err != nil {
		cancel()
		<-streamErr
		return err
	}
	for _, u := range nets {
		w.cfg.Sink.EndpointNames(u)
	}
	w.log.Info("watching Docker for container names", "api", version,
		"running_containers", running, "on_vxovl_networks", len(ids))
	// Ends when the stream breaks, or when ctx ends and takes the request
	// with it.
	return <-streamErr
}

// follow reads the event stream until it ends, queueing the containers
// whose names may have changed.
func (w *Watcher) follow(stream io.Reader) error {
	dec := json.NewDecoder(stream)
	for {
		var m message
		if err := dec.Decode(&m); err != nil {
			if errors.Is(err, io.EOF) {
				return errors.New("dockerd closed the event stream")
			}
			return fmt.Errorf("reading the event stream: %w", err)
		}
		if m.Type == "network" && m.Action == "create" && w.cfg.Managed(m.Actor.ID) {
			key := networkKey(m.Actor.ID)
			w.createdMu.Lock()
			w.created[key] = Update{NetworkID: m.Actor.ID, NetworkName: m.Actor.Attributes["name"]}
			w.createdMu.Unlock()
			w.queue.add(key)
			continue
		}
		if id, ok := w.concerns(m); ok {
			w.log.Debug("Docker event", "type", m.Type, "action", m.Action, "container", shortID(id))
			w.queue.add(id)
		}
	}
}

// concerns reports which container's names an event may have changed.
func (w *Watcher) concerns(m message) (containerID string, ok bool) {
	switch {
	case m.Type == "network" && m.Action == "connect":
		id := m.Actor.Attributes["container"]
		return id, id != "" && w.cfg.Managed(m.Actor.ID)
	case m.Type == "container" && (m.Action == "start" || m.Action == "rename"):
		return m.Actor.ID, m.Actor.ID != ""
	}
	return "", false
}

// work learns the names of queued containers until ctx ends.
func (w *Watcher) work(ctx context.Context) {
	for {
		id, ok := w.queue.get(ctx)
		if !ok {
			return
		}
		w.learn(ctx, id)
		w.queue.done(id)
	}
}

// learn inspects one container and reports its endpoints on vxovl
// networks. A failed inspect is retried after a pause, a few times.
func (w *Watcher) learn(ctx context.Context, id string) {
	w.createdMu.Lock()
	u, isNetwork := w.created[id]
	delete(w.created, id)
	w.createdMu.Unlock()
	if isNetwork {
		w.cfg.Sink.EndpointNames(u)
		return
	}
	ctr, err := w.client.inspect(ctx, id)
	switch {
	case err == nil:
	case ctx.Err() != nil:
		return
	case errors.Is(err, errNotFound):
		w.log.Debug("container went away before its names were learned", "container", shortID(id))
		w.succeeded(id)
		return
	default:
		w.failed(ctx, id, err)
		return
	}
	w.succeeded(id)
	for _, u := range endpointUpdates(ctr, w.cfg.Managed) {
		w.log.Debug("endpoint names", "network", u.NetworkName, "endpoint", shortID(u.EndpointID),
			"container", shortID(u.ContainerID), "names", u.Names)
		w.cfg.Sink.EndpointNames(u)
	}
}

func (w *Watcher) succeeded(id string) {
	w.attemptsMu.Lock()
	delete(w.attempts, id)
	w.attemptsMu.Unlock()
}

func (w *Watcher) failed(ctx context.Context, id string, err error) {
	w.attemptsMu.Lock()
	w.attempts[id]++
	n := w.attempts[id]
	if n >= w.maxAttempts {
		delete(w.attempts, id)
	}
	w.attemptsMu.Unlock()
	if n >= w.maxAttempts {
		w.log.Warn("giving up on a container's names until its next event or resync",
			"container", shortID(id), "attempts", n, "err", err)
		return
	}
	pause := min(w.minBackoff<<(n-1), w.maxBackoff)
	w.log.Warn("could not learn a container's names; will retry", "container", shortID(id), "retry_in", pause, "err", err)
	time.AfterFunc(pause, func() {
		if ctx.Err() == nil {
			w.queue.add(id)
		}
	})
}

// sleep waits d or until ctx ends; false if ctx ended.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
