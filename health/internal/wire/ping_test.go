package wire

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/icmp"

	"github.com/healthdns/healthdns/health/internal/testnet"
)

// pingers are the ICMP checks this process can run on this host, by name: pro-bing in each mode
// whose socket opens, and the echo wire when raw sockets open.
func pingers(t *testing.T) map[string]func(context.Context, netip.Addr) error {
	t.Helper()
	ps := map[string]func(context.Context, netip.Addr) error{}
	if c, err := icmp.ListenPacket("udp4", "0.0.0.0"); err == nil {
		c.Close()
		ps["pro-bing unprivileged"] = Ping(false)
	}
	if c, err := icmp.ListenPacket("ip4:icmp", "0.0.0.0"); err == nil {
		c.Close()
		ps["pro-bing privileged"] = Ping(true)
		ps["echo wire"] = probeVia(t, NewEcho())
	}
	if len(ps) == 0 {
		t.Skip("no ICMP socket opens for this process")
	}
	return ps
}

func TestPing(t *testing.T) {
	for name, ping := range pingers(t) {
		t.Run(name, func(t *testing.T) {
			for _, addr := range append(testnet.Loopbacks(t), netip.MustParseAddr("127.0.0.42")) {
				if err := probeWithin(ping, addr, answered); err != nil {
					t.Errorf("ping %s: %v", addr, err)
				}
			}
		})
	}
	// Cancelled before it starts: nothing is sent, so nothing can pass.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err := Ping(false)(ctx, testnet.Loopback4)
	if err == nil || !strings.HasPrefix(err.Error(), "icmp: not sent") || !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled ping: %v", err)
	}
}

// TestICMPNoReply pings a loopback that ignores echo requests: every prober must fail within its
// timeout, say "no reply", and return soon after its context is cancelled.
func TestICMPNoReply(t *testing.T) {
	if !testnet.InOwnNetns() {
		testnet.RunInOwnNetns(t)
		return
	}
	testnet.Sysctl(t, "net.ipv4.ping_group_range", "0 2147483647") // so pro-bing's unprivileged mode runs too
	probers := map[string]func(context.Context, netip.Addr) error{
		"pro-bing privileged":   Ping(true),
		"pro-bing unprivileged": Ping(false),
		"echo wire":             probeVia(t, NewEcho()),
	}
	addrs := []netip.Addr{testnet.Loopback4, testnet.Loopback6}

	// First the namespace answers, so a failure below is the black hole's doing.
	testnet.Sysctl(t, "net.ipv4.icmp_echo_ignore_all", "0")
	testnet.Sysctl(t, "net.ipv6.icmp.echo_ignore_all", "0")
	for name, p := range probers {
		for _, addr := range addrs {
			if err := probeWithin(p, addr, answered); err != nil {
				t.Fatalf("%s: ping %s before ignoring echoes: %v", name, addr, err)
			}
		}
	}

	testnet.Sysctl(t, "net.ipv4.icmp_echo_ignore_all", "1")
	testnet.Sysctl(t, "net.ipv6.icmp.echo_ignore_all", "1")
	for name, p := range probers {
		for _, addr := range addrs {
			t.Run(name+"/"+addr.String(), func(t *testing.T) {
				start := time.Now()
				err := probeWithin(p, addr, 300*time.Millisecond)
				took := time.Since(start)
				if err == nil {
					t.Fatal("passed with no reply")
				}
				if !strings.HasPrefix(err.Error(), "icmp: no reply within ") {
					t.Errorf("error %q, want icmp: no reply within ...", err)
				}
				if !errors.Is(err, context.DeadlineExceeded) {
					t.Errorf("error %q does not wrap context.DeadlineExceeded", err)
				}
				t.Logf("%v after %v", err, took)

				// Cancelled in flight, well before its one-minute timeout.
				ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
				defer cancel()
				done := make(chan error, 1)
				sent := time.Now()
				go func() { done <- p(ctx, addr) }()
				time.AfterFunc(50*time.Millisecond, cancel)
				select {
				case err := <-done:
					if err == nil {
						t.Error("a cancelled ping passed")
					}
					t.Logf("cancelled: %v after %v", err, time.Since(sent))
				case <-time.After(10 * time.Second):
					t.Fatal("still probing 10s after its context was cancelled")
				}
			})
		}
	}
}

// A failed unprivileged ping says what failed, and what to change, rather than the socket's
// own words ("write udp 0.0.0.0:7->10.99.0.1:0: sendto: network is unreachable"): here with
// ping sockets closed to every group, then open and pinging an address with no route.
func TestPingFailuresSayWhat(t *testing.T) {
	if !testnet.InOwnNetns() {
		testnet.RunInOwnNetns(t)
		return
	}
	testnet.Sysctl(t, "net.ipv4.ping_group_range", "1 0") // no group
	err := probeWithin(Ping(false), testnet.Loopback4, answered)
	want := fmt.Sprintf("icmp: cannot open a ping socket (permission denied): unprivileged ping needs net.ipv4.ping_group_range to include the process's group (%d), or CAP_NET_RAW", os.Getegid())
	if err == nil || err.Error() != want {
		t.Errorf("ping sockets closed: error %v, want %s", err, want)
	}

	testnet.Sysctl(t, "net.ipv4.ping_group_range", "0 2147483647")
	unrouted := netip.MustParseAddr("10.99.0.1") // the namespace has no route but loopback's
	err = probeWithin(Ping(false), unrouted, answered)
	if want := "icmp: echo request not sent: network is unreachable (no route to the backend)"; err == nil || err.Error() != want {
		t.Errorf("no route: error %v, want %s", err, want)
	}
	if !errors.Is(err, syscall.ENETUNREACH) || Reason(err) != ReasonUnreachable {
		t.Errorf("no route: error %v is not ENETUNREACH, reason %q", err, Reason(err))
	}
}

// TestPingUnprivileged pings through datagram ping sockets, which need no capability when
// net.ipv4.ping_group_range includes the process's group. When the host's range excludes us, the
// test opens the range in a namespace of its own rather than on the host, where other processes'
// ICMPMode would see it change under them.
func TestPingUnprivileged(t *testing.T) {
	if c, err := icmp.ListenPacket("udp4", "0.0.0.0"); err == nil {
		c.Close()
	} else if !testnet.InOwnNetns() {
		t.Logf("unprivileged ping sockets are off on the host (%v): trying a namespace", err)
		testnet.RunInOwnNetns(t)
		return
	} else {
		testnet.Sysctl(t, "net.ipv4.ping_group_range", "0 2147483647")
	}
	p := Ping(false)
	for _, addr := range testnet.Loopbacks(t) {
		if err := probeWithin(p, addr, answered); err != nil {
			t.Errorf("unprivileged ping %s: %v", addr, err)
		}
	}
}
