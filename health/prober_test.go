package health

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/icmp"
)

func probeWithin(p Prober, addr netip.Addr, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return p.Probe(ctx, addr)
}

// acceptAndClose plays a TCP backend until ln is closed.
func acceptAndClose(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		c.Close()
	}
}

func TestTCPProber(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := uint16(ln.Addr().(*net.TCPAddr).Port)
	go acceptAndClose(ln)
	p, err := NewProber(Check{Kind: TCP, Port: port}, false)
	if err != nil {
		t.Fatal(err)
	}
	loopback := netip.MustParseAddr("127.0.0.1")
	if err := probeWithin(p, loopback, time.Second); err != nil {
		t.Fatalf("listening port: %v", err)
	}

	ln.Close()
	err = probeWithin(p, loopback, time.Second)
	if err == nil {
		t.Fatal("closed port passed")
	}
	if want := "tcp :" + strconv.Itoa(int(port)) + ": connection refused"; err.Error() != want {
		t.Errorf("error %q, want %q", err, want)
	}

	// A probe whose time is already up fails at once and says so.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err = p.Probe(ctx, loopback)
	if err == nil || !strings.HasPrefix(err.Error(), "tcp :") || !strings.Contains(err.Error(), "no answer within the timeout") {
		t.Errorf("expired probe: %v", err)
	}
	if !errors.Is(err, context.Canceled) {
		t.Errorf("expired probe error %v does not wrap the context's", err)
	}
}

func TestICMPProber(t *testing.T) {
	privileged, err := ICMPMode()
	if err != nil {
		t.Skipf("ICMP is not available to this process, so only the error path is tested: %v", err)
	}
	p, err := NewProber(Check{Kind: ICMP}, privileged)
	if err != nil {
		t.Fatal(err)
	}
	if r, ok := p.(retainer); ok { // as a Monitor does
		r.retain()
		defer r.release()
	}
	for _, a := range []string{"127.0.0.1", "127.0.0.42", "::1"} {
		addr := netip.MustParseAddr(a)
		if addr.Is6() {
			if c, err := net.ListenPacket("udp6", "[::1]:0"); err != nil {
				t.Logf("skipping ::1: no IPv6 loopback (%v)", err)
				continue
			} else {
				c.Close()
			}
		}
		if err := probeWithin(p, addr, 2*time.Second); err != nil {
			t.Errorf("ping %s (privileged=%v): %v", a, privileged, err)
		}
	}
	// Cancelled before it starts: no reply can be counted.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := p.Probe(ctx, netip.MustParseAddr("127.0.0.1")); err == nil {
		t.Error("a cancelled ping passed")
	}
}

func TestICMPModeError(t *testing.T) {
	denied := func() error { return errors.New("socket: permission denied") }
	ok := func() error { return nil }
	if priv, err := icmpMode(ok, denied, func() string { return "0 0" }); priv || err != nil {
		t.Errorf("unprivileged works: privileged=%v err=%v", priv, err)
	}
	if priv, err := icmpMode(denied, ok, func() string { return "1 0" }); !priv || err != nil {
		t.Errorf("only raw works: privileged=%v err=%v", priv, err)
	}
	_, err := icmpMode(denied, denied, func() string { return "1 0" })
	if err == nil {
		t.Fatal("no error when neither socket opens")
	}
	for _, want := range []string{`ping_group_range = "1 0"`, "CAP_NET_RAW", `sysctl -w net.ipv4.ping_group_range="0 2147483647"`, "check tcp PORT"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
}

func BenchmarkProbe(b *testing.B) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	go acceptAndClose(ln)
	loopback := netip.MustParseAddr("127.0.0.1")
	tcp, _ := NewProber(Check{Kind: TCP, Port: uint16(ln.Addr().(*net.TCPAddr).Port)}, false)
	b.Run("tcp", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if err := probeWithin(tcp, loopback, time.Second); err != nil {
				b.Fatal(err)
			}
		}
	})
	privileged, err := ICMPMode()
	if err != nil {
		b.Skip(err)
	}
	icmp, _ := NewProber(Check{Kind: ICMP}, privileged)
	if r, ok := icmp.(retainer); ok {
		r.retain()
		defer r.release()
	}
	b.Run("icmp", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if err := probeWithin(icmp, loopback, time.Second); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// TestICMPUnprivileged pings through a datagram ping socket, which needs no capability when
// net.ipv4.ping_group_range includes our group. It widens the range for the test when it can.
func TestICMPUnprivileged(t *testing.T) {
	const sysctl = "/proc/sys/net/ipv4/ping_group_range"
	old, err := os.ReadFile(sysctl)
	if err != nil {
		t.Skipf("cannot read %s: %v", sysctl, err)
	}
	if err := os.WriteFile(sysctl, []byte("0 2147483647"), 0o644); err != nil {
		if _, err := icmp.ListenPacket("udp4", "0.0.0.0"); err != nil {
			t.Skipf("unprivileged ping sockets are off and %s is not writable (needs root): %v", sysctl, err)
		}
	} else {
		t.Cleanup(func() { os.WriteFile(sysctl, old, 0o644) })
	}
	if priv, err := ICMPMode(); err != nil || priv {
		t.Fatalf("with ping_group_range open: privileged=%v err=%v, want unprivileged", priv, err)
	}
	p := ICMPProber{Privileged: false}
	if err := probeWithin(p, netip.MustParseAddr("127.0.0.1"), 2*time.Second); err != nil {
		t.Fatalf("unprivileged ping: %v", err)
	}
}

// TestRawICMPSharedSocket sends many concurrent echoes through the one shared raw socket: each
// reply must reach its own probe, and releasing the prober closes the socket and its reader
// (goleak in TestMain checks the latter).
func TestRawICMPSharedSocket(t *testing.T) {
	if priv, err := icmpMode(func() error { return errors.New("skip datagram") }, openSocket("ip4:icmp"), pingGroupRange); err != nil || !priv {
		t.Skipf("raw ICMP sockets need CAP_NET_RAW (root): %v", err)
	}
	p := NewRawICMPProber()
	if err := probeWithin(p, netip.MustParseAddr("127.0.0.1"), time.Second); err == nil {
		t.Fatal("probed without being retained: nothing would close its socket")
	}
	p.retain()
	const n = 500
	errs := make(chan error, n)
	for i := range n {
		addr := netip.AddrFrom4([4]byte{127, 1, byte(i >> 8), byte(i)})
		go func() { errs <- probeWithin(p, addr, 5*time.Second) }()
	}
	for range n {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	p.mu.Lock()
	left := len(p.waiting)
	p.mu.Unlock()
	if left != 0 {
		t.Errorf("%d probes still registered after all returned", left)
	}
	p.release()
	if p.conns[0] != nil {
		t.Error("socket still open after the last release")
	}
}
