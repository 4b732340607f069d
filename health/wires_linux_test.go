package health

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"

	"github.com/healthdns/healthdns/health/internal/engine"
	"github.com/healthdns/healthdns/health/internal/rawsock"
	"github.com/healthdns/healthdns/health/internal/testnet"
	"github.com/healthdns/healthdns/health/internal/wire"
)

var tcpLoopSpec = Spec{Check: Check{Kind: TCP}, Interval: 200 * time.Millisecond, Timeout: 100 * time.Millisecond, Rise: 2, Fall: 2}

func tcpSpec(port uint16) Spec {
	s := tcpLoopSpec
	s.Check.Port = port
	return s
}

// tcpWires returns a registry per TCP wire this process can run: connect always, and half-open
// where raw sockets are allowed.
func tcpWires(t *testing.T, obs Observer) map[string]*Registry {
	t.Helper()
	wires := map[string]*Registry{"connect": NewRegistry(obs, WithConnect())}
	if rawsock.TCPAllowed() {
		wires["half-open"] = NewRegistry(obs)
	} else {
		t.Log("not testing half-open TCP probes: raw sockets need CAP_NET_RAW")
	}
	return wires
}

// TCP monitors are probed by the registry's one loop, by connect or half-open: every listening
// target comes up, a closed port goes down with "connection refused" at once (not at the
// deadline), a backend that stops listening goes down and comes back, probes are spread over
// the interval, and once the last lease is gone nothing more is reported and no socket is left
// open.
func TestTCPScheduled(t *testing.T) {
	for name, reg := range tcpWires(t, nil) {
		t.Run(name, func(t *testing.T) { testTCPScheduled(t, reg) })
	}
}

func testTCPScheduled(t *testing.T, reg *Registry) {
	fdsBefore := openFDs(t)
	first, port := testnet.ListenTCP(t)
	backends := []net.Listener{first}
	for i := 2; i <= 100; i++ {
		ln, err := net.Listen("tcp", fmt.Sprintf("127.4.0.%d:%d", i, port))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ln.Close() })
		go testnet.AcceptAndClose(ln)
		backends = append(backends, ln)
	}

	obs := &stampRecorder{}
	reg.obs = obs
	var leases []*Lease
	for _, ln := range backends {
		addr := netip.MustParseAddrPort(ln.Addr().String()).Addr()
		leases = append(leases, reg.Acquire(Target{Addr: addr, Spec: tcpSpec(port)}, "z."))
	}
	for _, l := range leases {
		<-l.Checked()
		if !l.Up() {
			t.Errorf("%s: down after its first probe", l.target.Addr)
		}
	}

	changes, _, _ := obs.count()
	refused := reg.Acquire(Target{Addr: netip.MustParseAddr("127.4.1.1"), Spec: tcpSpec(port)}, "z.")
	<-refused.Checked()
	c := obs.changeAfter(t, changes)
	if refused.Up() || !errors.Is(c.Err, syscall.ECONNREFUSED) {
		t.Errorf("closed port: up=%v, error %v; want down with connection refused", refused.Up(), c.Err)
	}
	if want := fmt.Sprintf("tcp :%d: connection refused", port); c.Err == nil || c.Err.Error() != want {
		t.Errorf("closed port's error %q, want %q", c.Err, want)
	}
	refused.Release()

	eventually(t, "five rounds of probes", func() bool { return obs.probes() >= 5*len(leases) })
	obs.requireSpread(t, len(leases)+1, tcpLoopSpec.Interval)

	dying := leases[len(leases)-1]
	backends[len(backends)-1].Close()
	eventually(t, "down once its listener is closed", func() bool { return !dying.Up() })
	ln, err := net.Listen("tcp", backends[len(backends)-1].Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go testnet.AcceptAndClose(ln)
	eventually(t, "up once it listens again", dying.Up)

	obs.releaseAll(t, leases, tcpLoopSpec.Interval)
	if st := reg.tcp.(interface{ Stats() engine.Stats }).Stats(); st != (engine.Stats{}) {
		t.Errorf("after the last release the loop holds %+v", st)
	}
	for _, ln := range backends {
		ln.Close()
	}
	ln.Close()
	eventually(t, "every socket closed", func() bool { return openFDs(t) <= fdsBefore })
}

// A half-open probe is invisible to the backend's application and leaves nothing on the
// backend: no connection is accepted, and no half-open entry (SYN_RECV) outlives the probe,
// since the prober's kernel resets every SYN-ACK. IPv6 probes, whose checksum the kernel sums,
// pass and are refused as IPv4's are.
func TestHalfOpenUnseen(t *testing.T) {
	if !rawsock.TCPAllowed() {
		t.Skip("half-open TCP probes need CAP_NET_RAW to open a raw socket")
	}
	for _, addr := range testnet.Loopbacks(t) {
		t.Run(addr.String(), func(t *testing.T) {
			ln, err := net.Listen("tcp", netip.AddrPortFrom(addr, 0).String())
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			var accepted atomic.Int32
			go func() {
				for {
					c, err := ln.Accept()
					if err != nil {
						return
					}
					accepted.Add(1)
					c.Close()
				}
			}()
			port := uint16(ln.Addr().(*net.TCPAddr).Port)

			obs := &stampRecorder{}
			reg := NewRegistry(obs)
			if _, ok := reg.tcpLoopLocked().(*engine.Loop[wire.HalfOpenState]); !ok {
				t.Fatalf("TCP checks probe through %T with raw sockets allowed", reg.tcp)
			}
			l := reg.Acquire(Target{Addr: addr, Spec: tcpSpec(port)}, "z.")
			eventually(t, "five probes", func() bool { return obs.probes() >= 5 })
			if !l.Up() {
				t.Errorf("%s: listening backend is down", addr)
			}
			refused := reg.Acquire(Target{Addr: addr, Spec: tcpSpec(port + 1)}, "z.")
			<-refused.Checked()
			if refused.Up() {
				t.Errorf("%s port %d, where nothing listens: up", addr, port+1)
			}
			refused.Release()
			l.Release()
			if n := accepted.Load(); n != 0 {
				t.Errorf("the backend accepted %d connections; half-open probes should open none", n)
			}
			eventually(t, "no half-open entry left at the backend", func() bool { return synRecvsOn(t, addr, port) == 0 })
		})
	}
}

// synRecvsOn counts the half-open (SYN_RECV) entries of local port on addr's family.
func synRecvsOn(t *testing.T, addr netip.Addr, port uint16) int {
	t.Helper()
	table := "/proc/net/tcp"
	if addr.Is6() {
		table = "/proc/net/tcp6"
	}
	b, err := os.ReadFile(table)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, line := range strings.Split(string(b), "\n") {
		fields := strings.Fields(line) // sl local_address rem_address st ...
		if len(fields) > 3 && fields[3] == "03" && strings.HasSuffix(fields[1], fmt.Sprintf(":%04X", port)) {
			n++
		}
	}
	return n
}

// In a namespace of the test's own, for each TCP loop: a backend that never answers a SYN goes
// down, having been sent three SYNs per probe; an address with no route fails at once; and
// probes leave no TIME_WAIT behind (the connector closes with a reset; half-open probes open
// no connection).
func TestTCPScheduledNoAnswer(t *testing.T) {
	if !testnet.InOwnNetns() {
		testnet.RunInOwnNetns(t)
		return
	}
	// A silent host: SYNs to 10.98.0.2 leave through a veth whose other end drops them (the
	// frames are addressed to a MAC no one has).
	for _, args := range [][]string{
		{"link", "add", "silent0", "type", "veth", "peer", "name", "silent1"},
		{"addr", "add", "10.98.0.1/24", "dev", "silent0"},
		{"link", "set", "silent0", "up"},
		{"link", "set", "silent1", "up"},
		{"neigh", "add", "10.98.0.2", "lladdr", "02:00:00:00:00:02", "dev", "silent0", "nud", "permanent"},
	} {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
	for name, reg := range tcpWires(t, nil) {
		t.Run(name, func(t *testing.T) { testTCPScheduledNoAnswer(t, reg) })
	}
}

func testTCPScheduledNoAnswer(t *testing.T, reg *Registry) {
	const port = 8080
	syns := countSYNs(t, "silent0", port)

	obs := &stampRecorder{}
	reg.obs = obs
	silent := reg.Acquire(Target{Addr: netip.MustParseAddr("10.98.0.2"), Spec: tcpSpec(port)}, "z.")
	<-silent.Checked()
	if silent.Up() {
		t.Fatal("up with every SYN dropped")
	}
	first := obs.changeAfter(t, 0)
	if want := fmt.Sprintf("tcp :%d: no answer within %s", port, tcpSpec(port).Timeout); first.Err == nil || first.Err.Error() != want {
		t.Errorf("first verdict's error %v, want %s", first.Err, want)
	}
	// How many tries a probe gets depends on how promptly the loop wakes (one past the
	// deadline sends no more): wait until a probe has sent more than one, one at most being in
	// flight, rather than count them. SYNs are counted before probes, so that a probe starting
	// between the two reads cannot make either bound hold by itself.
	var sent, probes int
	eventually(t, "four probes, one of them with a second try", func() bool {
		sent = syns()
		probes = obs.probes()
		return probes >= 4 && sent >= probes+2
	})
	silent.Release()
	if sent > engine.MaxTries*(probes+1) {
		t.Errorf("%d SYNs for %d unanswered probes, want up to %d tries each", sent, probes, engine.MaxTries)
	}
	t.Logf("%d SYNs for %d unanswered probes", sent, probes)

	unrouted := netip.MustParseAddr("10.99.0.1")
	before, _, _ := obs.count()
	l := reg.Acquire(Target{Addr: unrouted, Spec: tcpSpec(port)}, "z.")
	<-l.Checked()
	last := obs.changeAfter(t, before)
	if l.Up() || !errors.Is(last.Err, syscall.ENETUNREACH) {
		t.Errorf("unrouted %s: up=%v, error %v; want down with network is unreachable", unrouted, l.Up(), last.Err)
	}
	l.Release()

	_, lport := testnet.ListenTCP(t)
	healthy := reg.Acquire(Target{Addr: testnet.Loopback4, Spec: tcpSpec(lport)}, "z.")
	before = obs.probes()
	eventually(t, "five probes of a listening backend", func() bool { return obs.probes() >= before+5 })
	if !healthy.Up() {
		t.Error("listening backend is down")
	}
	healthy.Release()
	if n := timeWaitsTo(t, lport); n != 0 {
		t.Errorf("%d connections to port %d in TIME_WAIT: probes should close with a reset", n, lport)
	}
}

// countSYNs counts the SYNs to port that leave through dev, from now on.
func countSYNs(t *testing.T, dev string, port uint16) (count func() int) {
	t.Helper()
	ifi, err := net.InterfaceByName(dev)
	if err != nil {
		t.Fatal(err)
	}
	proto := htons(unix.ETH_P_ALL) // a tap on what is sent must take every protocol
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_DGRAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, int(proto))
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: proto, Ifindex: ifi.Index}); err != nil {
		t.Fatal(err)
	}
	f := os.NewFile(uintptr(fd), dev) // non-blocking: Close ends a Read under way
	var mu sync.Mutex
	n := 0
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 1500)
		for {
			got, err := f.Read(buf)
			if err != nil {
				return
			}
			if isSYNTo(buf[:got], port) {
				mu.Lock()
				n++
				mu.Unlock()
			}
		}
	}()
	t.Cleanup(func() { f.Close(); <-done })
	return func() int {
		mu.Lock()
		defer mu.Unlock()
		return n
	}
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

func isSYNTo(ip []byte, port uint16) bool {
	if len(ip) < 20 || ip[0]>>4 != 4 || ip[9] != unix.IPPROTO_TCP {
		return false
	}
	tcp := ip[int(ip[0]&0x0f)*4:]
	return len(tcp) >= 14 && binary.BigEndian.Uint16(tcp[2:]) == port && tcp[13]&0x12 == 0x02 // SYN, not SYN-ACK
}

// timeWaitsTo counts this namespace's IPv4 connections to remote port in TIME_WAIT.
func timeWaitsTo(t *testing.T, port uint16) int {
	t.Helper()
	f, err := os.Open("/proc/net/tcp")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	n := 0
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text()) // sl local_address rem_address st ...
		if len(fields) > 3 && fields[3] == "06" && strings.HasSuffix(fields[2], fmt.Sprintf(":%04X", port)) {
			n++
		}
	}
	return n
}

// The raw wires' IPv4 probes leave with DF set and IP ID 0: the kernel drew no ID for them. A
// watcher socket bound to the target's address sees each probe as loopback delivers it.
func TestRawProbesDontFragment(t *testing.T) {
	t.Run("icmp", func(t *testing.T) {
		reg := rawICMPRegistry(t, &stampRecorder{})
		target := netip.MustParseAddr("127.8.0.1")
		watch := watchRaw(t, "ip4:icmp", target)
		l := reg.Acquire(Target{Addr: target, Spec: icmpSpec}, "z.")
		defer l.Release()
		h := watch(func(b []byte) bool { return len(b) > 0 && b[0] == byte(ipv4.ICMPTypeEcho) })
		requireDF(t, h)
	})
	t.Run("half-open", func(t *testing.T) {
		if !rawsock.TCPAllowed() {
			t.Skip("half-open probes need raw sockets (CAP_NET_RAW)")
		}
		target := netip.MustParseAddr("127.8.0.2")
		watch := watchRaw(t, "ip4:tcp", target)
		const port = 9 // nothing listens: the SYN is all the test needs
		reg := NewRegistry(&stampRecorder{})
		l := reg.Acquire(Target{Addr: target, Spec: tcpSpec(port)}, "z.")
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
