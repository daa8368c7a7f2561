package engine

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

func TestAgreeVersion(t *testing.T) {
	for server, want := range map[string]string{
		"1.41": "1.41", // Docker 20.10
		"1.43": "1.43",
		"1.44": "1.44",
		"1.51": "1.44", // Docker 28
		"2.3":  "1.44",
		"1.40": "", // Docker 19.03
		"0.99": "",
		"":     "",
		"1":    "",
		"1.x":  "",
		"-1.4": "",
		"1.-4": "",
	} {
		got, err := agreeVersion(server)
		if want == "" {
			if err == nil {
				t.Errorf("agreeVersion(%q) = %q, want an error", server, got)
			}
			continue
		}
		if err != nil || got != want {
			t.Errorf("agreeVersion(%q) = %q, %v; want %q", server, got, err, want)
		}
	}
}

// silentDockerd accepts connections on a unix socket and answers each with
// the result of answer (nothing while answer blocks).
func silentDockerd(t *testing.T, answer func(net.Conn)) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "docker.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() {
		l.Close()
		wg.Wait()
	})
	wg.Go(func() {
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer conn.Close()
				_, _ = http.ReadRequest(bufio.NewReader(conn))
				answer(conn)
			})
		}
	})
	return sock
}

func TestCallsAreBounded(t *testing.T) {
	hang := make(chan struct{})
	defer close(hang)
	sock := silentDockerd(t, func(net.Conn) { <-hang })
	c := newClient(sock, 50*time.Millisecond)
	start := time.Now()
	if _, err := c.negotiate(context.Background()); err == nil {
		t.Fatal("a dockerd that never answers was negotiated with")
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("the call took %v with a 50ms timeout", d)
	}
}

func TestEventStreamOutlivesTheCallTimeout(t *testing.T) {
	const timeout = 20 * time.Millisecond
	hold := make(chan struct{})
	defer close(hold)
	sock := silentDockerd(t, func(conn net.Conn) {
		fmt.Fprint(conn, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
		time.Sleep(5 * timeout) // an idle stream: no event for a while
		ev := `{"Type":"container","Action":"start","Actor":{"ID":"abc"}}` + "\n"
		fmt.Fprintf(conn, "%x\r\n%s\r\n", len(ev), ev)
		<-hold // and then keep the stream open
	})
	c := newClient(sock, timeout)
	v := "1.41"
	c.version.Store(&v)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	body, err := c.events(ctx, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	defer body.Close()
	var m message
	if err := json.NewDecoder(body).Decode(&m); err != nil || m.Actor.ID != "abc" {
		t.Fatalf("event %+v, %v", m, err)
	}

	// Ending the context ends a read that waits for the next event.
	readErr := make(chan error, 1)
	go func() { readErr <- json.NewDecoder(body).Decode(&m) }()
	cancel()
	select {
	case err := <-readErr:
		if err == nil {
			t.Fatal("read an event after the context ended")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a read of the event stream outlived its context")
	}
}
