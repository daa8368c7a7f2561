package engine

import (
	"context"
	"sync"
)

// queue holds the containers whose names must be (re)learned. A container
// is in it at most once however many events name it, and is given to one
// worker at a time; an event for a container being worked on brings it
// back once that work is done, so the last inspect always follows the last
// event. Its size is bounded by the number of containers.
type queue struct {
	mu     sync.Mutex
	order  []string        // waiting, oldest first
	queued map[string]bool // waiting, or waiting for its active work to end
	active map[string]bool // given to a worker, not done yet
	wake   chan struct{}   // a token for a worker waiting in get
}

func newQueue() *queue {
	return &queue{queued: map[string]bool{}, active: map[string]bool{}, wake: make(chan struct{}, 1)}
}

// add queues id unless it already waits.
func (q *queue) add(id string) {
	q.mu.Lock()
	if q.queued[id] {
		q.mu.Unlock()
		return
	}
	q.queued[id] = true
	ready := !q.active[id]
	if ready {
		q.order = append(q.order, id)
	}
	q.mu.Unlock()
	if ready {
		q.signal()
	}
}

// get waits for a container to work on; false when ctx ends first. The
// caller calls done with it afterwards.
func (q *queue) get(ctx context.Context) (string, bool) {
	for {
		q.mu.Lock()
		if len(q.order) > 0 {
			id := q.order[0]
			q.order[0] = ""
			q.order = q.order[1:]
			delete(q.queued, id)
			q.active[id] = true
			more := len(q.order) > 0
			q.mu.Unlock()
			if more {
				q.signal() // pass the token on to another waiting worker
			}
			return id, true
		}
		q.mu.Unlock()
		select {
		case <-ctx.Done():
			return "", false
		case <-q.wake:
		}
	}
}

// done ends the work on id and requeues it if it was added meanwhile.
func (q *queue) done(id string) {
	q.mu.Lock()
	delete(q.active, id)
	again := q.queued[id]
	if again {
		q.order = append(q.order, id)
	}
	q.mu.Unlock()
	if again {
		q.signal()
	}
}

func (q *queue) signal() {
	select {
	case q.wake <- struct{}{}:
	default:
	}
}
