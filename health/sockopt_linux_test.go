package health

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"

	"golang.org/x/net/ipv4"
)

// The raw wires' IPv4 probes leave with DF set and IP ID 0: the kernel drew no ID for them. A
// watcher socket bound to the target's address sees each probe as loopback delivers it.
func TestRawProbesDontFragment(t *testing.T) {
	t.Run("icmp", func(t *testing.T) {
		needRawICMP(t)
		target := netip.MustParseAddr("127.8.0.1")
		watch := watchRaw(t, "ip4:icmp", target)
		reg := NewRegistry(&stampRecorder{})
		p, err := reg.Prober(Check{Kind: ICMP}, true)
		if err != nil {
			t.Fatal(err)
		}
		l := reg.Acquire(Target{Addr: target, Spec: icmpSpec}, p, "z.")
		defer l.Release()
		h := watch(func(b []byte) bool { return len(b) > 0 && b[0] == byte(ipv4.ICMPTypeEcho) })
		requireDF(t, h)
	})
	t.Run("half-open", func(t *testing.T) {
		if !rawTCPAllowed() {
			t.Skip("half-open probes need raw sockets (CAP_NET_RAW)")
		}
		target := netip.MustParseAddr("127.8.0.2")
		watch := watchRaw(t, "ip4:tcp", target)
		const port = 9 // nothing listens: the SYN is all the test needs
		reg := NewRegistry(&stampRecorder{})
		p, err := reg.Prober(Check{Kind: TCP, Port: port}, false)
		if err != nil {
			t.Fatal(err)
		}
		l := reg.Acquire(Target{Addr: target, Spec: tcpSpec(port)}, p, "z.")
		defer l.Release()
		const syn, ack = 0x02, 0x10
		h := watch(func(b []byte) bool {
			return len(b) >= 20 && b[2] == 0 && b[3] == port && b[13]&(syn|ack) == syn
		})
		requireDF(t, h)
	})
}

func requireDF(t *testing.T, h *ipv4.Header) {
	t.Helper()
	if h.Flags&ipv4.DontFragment == 0 || h.ID != 0 {
		t.Errorf("probe sent with flags %v and ID %d: want DF and ID 0", h.Flags, h.ID)
	}
}

// watchRaw opens a raw socket for network's protocol bound to addr, and returns a function that
// waits up to five seconds for a packet whose payload matches and returns its IP header.
func watchRaw(t *testing.T, network string, addr netip.Addr) func(match func([]byte) bool) *ipv4.Header {
	t.Helper()
	pc, err := net.ListenPacket(network, addr.String())
	if err != nil {
		t.Skipf("watching %s needs a raw socket: %v", network, err)
	}
	t.Cleanup(func() { pc.Close() })
	rc, err := ipv4.NewRawConn(pc)
	if err != nil {
		t.Fatal(err)
	}
	return func(match func([]byte) bool) *ipv4.Header {
		t.Helper()
		rc.SetReadDeadline(time.Now().Add(5 * time.Second))
		buf := make([]byte, 1500)
		for {
			h, payload, _, err := rc.ReadFrom(buf)
			if errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatalf("no probe to %s seen in 5s", addr)
			}
			if err != nil {
				t.Fatal(err)
			}
			if h.Dst.Equal(addr.AsSlice()) && match(payload) {
				return h
			}
		}
	}
}
