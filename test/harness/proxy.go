package harness

import (
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

// Proxy relays TCP from a port of its own on 127.0.0.1 to a target, so that a test can cut one
// client off from a server that others keep reaching (a server of a fleet from their etcd):
// Cut closes the listener and every relayed connection (connects are refused, as from a
// server that went away); Mend listens again on the same port.
type Proxy struct {
	Addr   string // 127.0.0.1:port, where clients connect
	target string

	t     testing.TB
	mu    sync.Mutex
	ln    net.Listener
	conns map[net.Conn]bool
	wg    sync.WaitGroup
}

// StartProxy relays a fresh port to target (host:port); the test's cleanup cuts it.
func StartProxy(t testing.TB, target string) *Proxy {
	t.Helper()
	p := &Proxy{t: t, target: target, conns: map[net.Conn]bool{}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("proxy to %s: %v", target, err)
	}
	p.Addr = ln.Addr().String()
	p.serve(ln)
	t.Cleanup(p.Cut)
	return p
}

// Mend listens again on Addr; a no-op while the proxy relays.
func (p *Proxy) Mend() {
	p.t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ln != nil {
		return
	}
	deadline := time.Now().Add(5 * time.Second)
	for { // a just-closed listener's port can take a moment to be bindable again
		ln, err := net.Listen("tcp", p.Addr)
		if err == nil {
			p.serveLocked(ln)
			return
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("proxy %s to %s: %v", p.Addr, p.target, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Cut closes the listener and every relayed connection, and waits for their relays to end.
func (p *Proxy) Cut() {
	p.mu.Lock()
	if p.ln != nil {
		p.ln.Close()
		p.ln = nil
	}
	for c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}

func (p *Proxy) serve(ln net.Listener) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.serveLocked(ln)
}

func (p *Proxy) serveLocked(ln net.Listener) {
	p.ln = ln
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			p.relay(c)
		}
	}()
}

// relay copies c to a new connection to the target and back, until either end closes or Cut.
func (p *Proxy) relay(c net.Conn) {
	up, err := net.DialTimeout("tcp", p.target, 2*time.Second)
	if err != nil {
		c.Close()
		return
	}
	p.mu.Lock()
	if p.ln == nil { // cut meanwhile
		p.mu.Unlock()
		c.Close()
		up.Close()
		return
	}
	p.conns[c], p.conns[up] = true, true
	p.wg.Add(2)
	p.mu.Unlock()
	done := func() {
		c.Close()
		up.Close()
		p.mu.Lock()
		delete(p.conns, c)
		delete(p.conns, up)
		p.mu.Unlock()
		p.wg.Done()
	}
	go func() { defer done(); io.Copy(up, c) }()
	go func() { defer done(); io.Copy(c, up) }()
}
