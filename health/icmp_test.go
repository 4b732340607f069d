package health

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/icmp"
)

var (
	loopback4 = netip.MustParseAddr("127.0.0.1")
	loopback6 = netip.MustParseAddr("::1")
)

// loopbacks returns 127.0.0.1, and ::1 when the host has an IPv6 loopback.
func loopbacks(t *testing.T) []netip.Addr {
	t.Helper()
	c, err := net.ListenPacket("udp6", "[::1]:0")
	if err != nil {
		t.Logf("not probing ::1: no IPv6 loopback (%v)", err)
		return []netip.Addr{loopback4}
	}
	c.Close()
	return []netip.Addr{loopback4, loopback6}
}

// retained runs as a Monitor does: a prober holding sockets is retained while it probes.
func retained(t *testing.T, p Prober) Prober {
	if r, ok := p.(retainer); ok {
		r.retain()
		t.Cleanup(r.release)
	}
	return p
}

// icmpProbers are the ICMP probers this process can run on this host, by name: pro-bing in the
// mode ICMPMode reports and, when raw sockets open, also the shared raw socket prober.
func icmpProbers(t *testing.T) map[string]Prober {
	t.Helper()
	privileged, err := ICMPMode()
	if err != nil {
		t.Skipf("ICMP is not available to this process (TestICMPModeError covers the message): %v", err)
	}
	ps := map[string]Prober{fmt.Sprintf("pro-bing privileged=%v", privileged): ICMPProber{Privileged: privileged}}
	if privileged {
		ps["shared raw"] = retained(t, NewRawICMPProber())
	}
	return ps
}

func TestICMPProber(t *testing.T) {
	for name, p := range icmpProbers(t) {
		t.Run(name, func(t *testing.T) {
			for _, addr := range append(loopbacks(t), netip.MustParseAddr("127.0.0.42")) {
				if err := probeWithin(p, addr, 2*time.Second); err != nil {
					t.Errorf("ping %s: %v", addr, err)
				}
			}
			// Cancelled before it starts: nothing is sent, so nothing can pass.
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			err := p.Probe(ctx, loopback4)
			if err == nil || !strings.HasPrefix(err.Error(), "icmp: not sent") || !errors.Is(err, context.Canceled) {
				t.Errorf("cancelled ping: %v", err)
			}
		})
	}
	t.Run("NewProber", func(t *testing.T) {
		privileged, _ := ICMPMode()
		p, err := NewProber(Check{Kind: ICMP}, privileged)
		if err != nil {
			t.Fatal(err)
		}
		if err := probeWithin(retained(t, p), loopback4, 2*time.Second); err != nil {
			t.Errorf("ping 127.0.0.1 (privileged=%v): %v", privileged, err)
		}
	})
}

// The tests below need a host that does not answer pings, and the only addresses a test may
// probe (loopback) always answer. So they run in a network namespace of their own, where
// loopback is up and net.ipv{4,6}.icmp.echo_ignore_all, like ping_group_range, is the
// namespace's and not the host's. The test binary re-runs itself inside the namespace with
// `ip netns exec`; outside, it needs root and iproute2, and skips without them.

const netnsEnv = "HEALTHDNS_TEST_NETNS"

// inOwnNetns reports whether this process is the copy running in the test's namespace.
func inOwnNetns() bool { return os.Getenv(netnsEnv) != "" }

// runInOwnNetns creates a namespace, runs test t again inside it and reports its outcome.
func runInOwnNetns(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to create a network namespace")
	}
	ip, err := exec.LookPath("ip")
	if err != nil {
		t.Skip("needs iproute2's ip to create a network namespace")
	}
	exe, err := os.Executable()
	if err != nil {
		t.Skip(err)
	}
	ns := fmt.Sprintf("hdns-probe-test-%d", os.Getpid())
	if out, err := exec.Command(ip, "netns", "add", ns).CombinedOutput(); err != nil {
		t.Skipf("cannot create a network namespace: %v: %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command(ip, "netns", "del", ns).CombinedOutput(); err != nil {
			t.Errorf("deleting namespace %s: %v: %s", ns, err, out)
		}
	})
	if out, err := exec.Command(ip, "-n", ns, "link", "set", "lo", "up").CombinedOutput(); err != nil {
		t.Fatalf("loopback up in %s: %v: %s", ns, err, out)
	}
	cmd := exec.Command(ip, "netns", "exec", ns, exe, "-test.run=^"+t.Name()+"$", "-test.count=1", "-test.v", "-test.timeout=2m")
	cmd.Env = append(os.Environ(), netnsEnv+"="+ns)
	out, err := cmd.CombinedOutput()
	t.Logf("in namespace %s:\n%s", ns, out)
	if err != nil {
		t.Fatalf("in namespace %s: %v", ns, err)
	}
	if !strings.Contains(string(out), "--- PASS: "+t.Name()) {
		t.Fatalf("in namespace %s: %s did not run", ns, t.Name())
	}
}

// sysctl writes a namespaced sysctl; only call it inside the test's own namespace.
func sysctl(t *testing.T, name, value string) {
	t.Helper()
	if !inOwnNetns() {
		t.Fatalf("refusing to write %s outside the test's namespace", name)
	}
	if err := os.WriteFile("/proc/sys/"+strings.ReplaceAll(name, ".", "/"), []byte(value), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestICMPNoReply pings a loopback that ignores echo requests: every prober must fail within its
// timeout, say "no reply", and return soon after its context is cancelled.
func TestICMPNoReply(t *testing.T) {
	if !inOwnNetns() {
		runInOwnNetns(t)
		return
	}
	sysctl(t, "net.ipv4.ping_group_range", "0 2147483647") // so pro-bing's unprivileged mode runs too
	probers := map[string]Prober{
		"pro-bing privileged":   ICMPProber{Privileged: true},
		"pro-bing unprivileged": ICMPProber{Privileged: false},
		"shared raw":            retained(t, NewRawICMPProber()),
	}
	addrs := []netip.Addr{loopback4, loopback6}

	// First the namespace answers, so a failure below is the black hole's doing.
	sysctl(t, "net.ipv4.icmp_echo_ignore_all", "0")
	sysctl(t, "net.ipv6.icmp.echo_ignore_all", "0")
	for name, p := range probers {
		for _, addr := range addrs {
			if err := probeWithin(p, addr, 2*time.Second); err != nil {
				t.Fatalf("%s: ping %s before ignoring echoes: %v", name, addr, err)
			}
		}
	}

	sysctl(t, "net.ipv4.icmp_echo_ignore_all", "1")
	sysctl(t, "net.ipv6.icmp.echo_ignore_all", "1")
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
				go func() { done <- p.Probe(ctx, addr) }()
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

// TestICMPUnprivileged pings through datagram ping sockets, which need no capability when
// net.ipv4.ping_group_range includes the process's group. When the host's range excludes us, the
// test opens the range in a namespace of its own rather than on the host, where other processes'
// ICMPMode would see it change under them.
func TestICMPUnprivileged(t *testing.T) {
	if c, err := icmp.ListenPacket("udp4", "0.0.0.0"); err == nil {
		c.Close()
	} else if !inOwnNetns() {
		t.Logf("unprivileged ping sockets are off on the host (%v): trying a namespace", err)
		runInOwnNetns(t)
		return
	} else {
		sysctl(t, "net.ipv4.ping_group_range", "0 2147483647")
	}
	// As root ICMPMode prefers the raw socket; leaving it out asks what a process without
	// CAP_NET_RAW would get.
	if priv, err := icmpMode(openSocket("udp4"), func() error { return errors.New("skip raw") }, pingGroupRange); err != nil || priv {
		t.Fatalf("icmpMode with unprivileged sockets allowed and raw ones not: privileged=%v err=%v, want unprivileged", priv, err)
	}
	p, err := NewProber(Check{Kind: ICMP}, false)
	if err != nil {
		t.Fatal(err)
	}
	for _, addr := range loopbacks(t) {
		if err := probeWithin(p, addr, 2*time.Second); err != nil {
			t.Errorf("unprivileged ping %s: %v", addr, err)
		}
	}
}

// TestICMPModeReal checks ICMPMode against the sockets this process can actually open.
func TestICMPModeReal(t *testing.T) {
	privileged, err := ICMPMode()
	dgram, dgramErr := icmp.ListenPacket("udp4", "0.0.0.0")
	if dgramErr == nil {
		dgram.Close()
	}
	raw, rawErr := icmp.ListenPacket("ip4:icmp", "0.0.0.0")
	if rawErr == nil {
		raw.Close()
	}
	switch {
	case rawErr == nil:
		if err != nil || !privileged {
			t.Errorf("raw sockets open: privileged=%v err=%v, want privileged", privileged, err)
		}
	case dgramErr == nil:
		if err != nil || privileged {
			t.Errorf("only datagram sockets open: privileged=%v err=%v, want unprivileged", privileged, err)
		}
	default:
		if err == nil {
			t.Errorf("no ICMP socket opens (%v; %v) but ICMPMode reports privileged=%v", dgramErr, rawErr, privileged)
		}
	}
	t.Logf("privileged=%v err=%v (datagram: %v, raw: %v)", privileged, err, dgramErr, rawErr)
}

// TestRawICMPSharedSocket sends many concurrent echoes through the one shared raw socket: each
// reply must reach its own probe, and releasing the prober closes the socket and its reader
// (goleak in TestMain checks the latter).
func TestRawICMPSharedSocket(t *testing.T) {
	if priv, err := icmpMode(func() error { return errors.New("skip datagram") }, openSocket("ip4:icmp"), pingGroupRange); err != nil || !priv {
		t.Skipf("raw ICMP sockets need CAP_NET_RAW (root): %v", err)
	}
	p := NewRawICMPProber()
	if err := probeWithin(p, loopback4, time.Second); err == nil {
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
