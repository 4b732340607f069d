package testkit

import (
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

// TCPBackend is a backend that misbehaves as a test says: each connection to it is served by
// the test's function, and closed when the function returns.
type TCPBackend struct {
	Port     uint16
	accepted atomic.Int64
}

// Accepted counts the connections it took.
func (b *TCPBackend) Accepted() int64 { return b.accepted.Load() }

// ServeTCP listens on ip, on a port of its own, and serves each connection with serve until the
// test ends; then it closes the listener and every connection, and waits for serve to return.
func ServeTCP(t testing.TB, ip string, serve func(c net.Conn)) *TCPBackend {
	t.Helper()
	ln, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		t.Fatal(err)
	}
	b := &TCPBackend{Port: uint16(ln.Addr().(*net.TCPAddr).Port)}
	var mu sync.Mutex
	var conns []net.Conn
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			b.accepted.Add(1)
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Add(1)
			go func() { defer wg.Done(); defer c.Close(); serve(c) }()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return b
}

// ReadRequest reads what a client sends up to the end of a request's head (or until the
// connection fails), so that a backend answers after it as a server would.
func ReadRequest(c net.Conn) {
	buf := make([]byte, 4096)
	var got []byte
	for !strings.Contains(string(got), "\r\n\r\n") {
		n, err := c.Read(buf)
		if err != nil {
			return
		}
		got = append(got, buf[:n]...)
	}
}
