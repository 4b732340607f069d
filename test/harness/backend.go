package harness

import (
	"net"
	"strconv"
	"sync"
	"testing"
	"time"
)

// Backend is a real TCP service on IP:Port that accepts connections and closes them at once.
// Stop closes the listener (connects are then refused); Start listens again on the same address.
type Backend struct {
	IP   string
	Port int

	t  testing.TB
	mu sync.Mutex
	ln net.Listener
	wg sync.WaitGroup
}

// StartBackend starts a backend on ip:port; the test's cleanup stops it.
func StartBackend(t testing.TB, ip string, port int) *Backend {
	t.Helper()
	b := &Backend{t: t, IP: ip, Port: port}
	b.Start()
	t.Cleanup(b.Stop)
	return b
}

// StartBackends starts a backend on every ip, all on one fresh port, and returns the port.
func StartBackends(t testing.TB, ips ...string) (int, map[string]*Backend) {
	t.Helper()
	port := FreePort(t, ips...)
	bs := map[string]*Backend{}
	for _, ip := range ips {
		bs[ip] = StartBackend(t, ip, port)
	}
	return port, bs
}

// Addr is the backend's host:port.
func (b *Backend) Addr() string { return net.JoinHostPort(b.IP, strconv.Itoa(b.Port)) }

// Start listens again; it is a no-op while the backend listens.
func (b *Backend) Start() {
	b.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for { // a just-closed listener's port can take a moment to be bindable again
		err := b.Listen()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			b.t.Fatalf("backend %s: %v", b.Addr(), err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Listen listens again once, and returns why it could not: for a goroutine other than the
// test's, which may not fail it. It is a no-op while the backend listens.
func (b *Backend) Listen() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.ln != nil {
		return nil
	}
	ln, err := net.Listen("tcp", b.Addr())
	if err != nil {
		return err
	}
	b.ln = ln
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	return nil
}

// Stop closes the listener and waits for its accept loop to end.
func (b *Backend) Stop() {
	b.mu.Lock()
	ln := b.ln
	b.ln = nil
	b.mu.Unlock()
	if ln != nil {
		ln.Close()
		b.wg.Wait()
	}
}
