// Package clustertest has helpers for tests that run real cluster nodes on
// loopback, in this package's tests and in its users'.
package clustertest

import (
	"net"
	"strconv"
	"testing"
)

// FreePort returns a loopback port that is free for both TCP and UDP, as a
// memberlist node needs.
func FreePort(t testing.TB) int {
	t.Helper()
	for range 50 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		u, err := net.ListenPacket("udp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		l.Close()
		if err == nil {
			u.Close()
			return port
		}
	}
	t.Fatal("no loopback port free for both TCP and UDP")
	return 0
}
