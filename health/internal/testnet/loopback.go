package testnet

import (
	"net"
	"net/netip"
	"testing"
)

// The loopback addresses every host has, IPv6's if it is there.
var (
	Loopback4 = netip.MustParseAddr("127.0.0.1")
	Loopback6 = netip.MustParseAddr("::1")
)

// Loopbacks returns 127.0.0.1, and ::1 when the host has an IPv6 loopback.
func Loopbacks(t testing.TB) []netip.Addr {
	t.Helper()
	c, err := net.ListenPacket("udp6", "[::1]:0")
	if err != nil {
		t.Logf("not probing ::1: no IPv6 loopback (%v)", err)
		return []netip.Addr{Loopback4}
	}
	c.Close()
	return []netip.Addr{Loopback4, Loopback6}
}

// ListenTCP starts a TCP backend on 127.0.0.1 that accepts and closes, until the test ends, and
// returns it and its port.
func ListenTCP(t testing.TB) (net.Listener, uint16) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go AcceptAndClose(ln)
	return ln, uint16(ln.Addr().(*net.TCPAddr).Port)
}

// AcceptAndClose plays a TCP backend on ln until ln is closed.
func AcceptAndClose(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		c.Close()
	}
}
