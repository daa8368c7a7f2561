package engine

import (
	"context"
	"testing"
	"time"
)

func TestQueue(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	q := newQueue()
	q.add("a")
	q.add("b")
	q.add("a") // already waiting: no second entry
	if id, _ := q.get(ctx); id != "a" {
		t.Fatalf("first get = %q, want a", id)
	}
	q.add("a") // while a worker has it: waits until done
	if id, _ := q.get(ctx); id != "b" {
		t.Fatalf("second get = %q, want b (a is being worked on)", id)
	}
	q.add("a") // still once
	short, cancelShort := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancelShort()
	if id, ok := q.get(short); ok {
		t.Fatalf("got %q while a is still being worked on", id)
	}
	q.done("a")
	if id, _ := q.get(ctx); id != "a" {
		t.Fatalf("after done, get = %q, want a again", id)
	}
	q.done("a")
	q.done("b")
	if id, ok := q.get(short); ok {
		t.Fatalf("got %q from an empty queue", id)
	}
}

// Several workers waiting are all woken for several items.
func TestQueueWakesEveryWorker(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	q := newQueue()
	got := make(chan string)
	for range 3 {
		go func() {
			id, ok := q.get(ctx)
			if ok {
				got <- id // not done: each worker keeps its item
			}
		}()
	}
	q.add("x")
	q.add("y")
	q.add("z")
	seen := map[string]bool{}
	for range 3 {
		select {
		case id := <-got:
			seen[id] = true
		case <-ctx.Done():
			t.Fatalf("only %v were handed out", seen)
		}
	}
	if len(seen) != 3 {
		t.Fatalf("handed out %v", seen)
	}
}
