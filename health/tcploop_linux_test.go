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

	"golang.org/x/sys/unix"
)

var tcpLoopSpec = Spec{Check: Check{Kind: TCP}, Interval: 200 * time.Millisecond, Timeout: 100 * time.Millisecond, Rise: 2, Fall: 2}

func tcpSpec(port uint16) Spec {
	s := tcpLoopSpec
	s.Check.Port = port
	return s
}

// openFDs counts this process's open file descriptors.
func openFDs(t *testing.T) int {
	t.Helper()
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(fds)
}

// tcpWires returns a registry per TCP loop this process can run: the connector always, and the
// half-open prober where raw sockets are allowed.
func tcpWires(t *testing.T, obs Observer) map[string]*Registry {
	t.Helper()
	connect := NewRegistry(obs)
	connect.connectOnly = true
	wires := map[string]*Registry{"connect": connect}
	if rawTCPAllowed() {
		wires["half-open"] = NewRegistry(obs)
	} else {
		t.Log("not testing half-open TCP probes: raw sockets need CAP_NET_RAW")
	}
	return wires
}

// loopLeftover describes what a released TCP loop still holds; "" when it holds nothing.
func loopLeftover(loop scheduler) string {
	var l *probeLoop
	held := ""
	switch w := loop.(type) {
	case *tcpConnector:
		l = &w.probeLoop
		w.mu.Lock()
		defer w.mu.Unlock()
		if len(w.flight) != 0 || w.epfd != -1 {
			held = fmt.Sprintf("%d sockets in flight, epoll %d; ", len(w.flight), w.epfd)
		}
	case *halfOpenProber:
		l = &w.probeLoop
		w.mu.Lock()
		defer w.mu.Unlock()
		if len(w.flight) != 0 || w.conns != [2]*synConn{} {
			held = fmt.Sprintf("%d SYNs in flight, sockets %v; ", len(w.flight), w.conns)
		}
	}
	if len(l.targets) != 0 || l.events.size != 0 || l.inFlight != 0 {
		held += fmt.Sprintf("%d targets, %d queued, %d probes", len(l.targets), l.events.size, l.inFlight)
	}
	return held
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
	first, port := listenTCP(t)
	backends := []net.Listener{first}
	for i := 2; i <= 100; i++ {
		ln, err := net.Listen("tcp", fmt.Sprintf("127.4.0.%d:%d", i, port))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ln.Close() })
		go acceptAndClose(ln)
		backends = append(backends, ln)
	}

	obs := &stampRecorder{}
	reg.obs = obs
	p, err := reg.Prober(Check{Kind: TCP, Port: port}, false)
	if err != nil {
		t.Fatal(err)
	}
	if other, _ := reg.Prober(Check{Kind: TCP, Port: port + 1}, false); other.(*scheduledTCPProber).loop != p.(*scheduledTCPProber).loop {
		t.Fatal("two TCP checks of one registry have two loops")
	}
	loop := p.(*scheduledTCPProber).loop
	var leases []*Lease
	for _, ln := range backends {
		addr := netip.MustParseAddrPort(ln.Addr().String()).Addr()
		leases = append(leases, reg.Acquire(Target{Addr: addr, Spec: tcpSpec(port)}, p, "z."))
	}
	for _, l := range leases {
		<-l.Checked()
		if !l.Up() {
			t.Errorf("%s: down after its first probe", l.target.Addr)
		}
	}

	changes, _, _ := obs.count()
	refused := reg.Acquire(Target{Addr: netip.MustParseAddr("127.4.1.1"), Spec: tcpSpec(port)}, p, "z.")
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
	go acceptAndClose(ln)
	eventually(t, "up once it listens again", dying.Up)

	obs.releaseAll(t, leases, tcpLoopSpec.Interval)
	if held := loopLeftover(loop); held != "" {
		t.Errorf("after the last release: %s", held)
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
	if !rawTCPAllowed() {
		t.Skip("half-open TCP probes need CAP_NET_RAW to open a raw socket")
	}
	for _, addr := range loopbacks(t) {
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
			p, _ := reg.Prober(Check{Kind: TCP, Port: port}, false)
			if _, ok := p.(*scheduledTCPProber).loop.(*halfOpenProber); !ok {
				t.Fatalf("TCP checks probe through %T with raw sockets allowed", p.(*scheduledTCPProber).loop)
			}
			l := reg.Acquire(Target{Addr: addr, Spec: tcpSpec(port)}, p, "z.")
			eventually(t, "five probes", func() bool { return obs.probes() >= 5 })
			if !l.Up() {
				t.Errorf("%s: listening backend is down", addr)
			}
			refused := reg.Acquire(Target{Addr: addr, Spec: tcpSpec(port + 1)}, p, "z.")
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
	if !inOwnNetns() {
		runInOwnNetns(t)
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
	p, _ := reg.Prober(Check{Kind: TCP, Port: port}, false)
	silent := reg.Acquire(Target{Addr: netip.MustParseAddr("10.98.0.2"), Spec: tcpSpec(port)}, p, "z.")
	<-silent.Checked()
	if silent.Up() {
		t.Fatal("up with every SYN dropped")
	}
	first := obs.changeAfter(t, 0)
	if want := fmt.Sprintf("tcp :%d: no answer within %s", port, tcpSpec(port).Timeout); first.Err == nil || first.Err.Error() != want {
		t.Errorf("first verdict's error %v, want %s", first.Err, want)
	}
	eventually(t, "four probes", func() bool { return obs.probes() >= 4 })
	silent.Release()
	probes := obs.probes()
	sent := syns()
	if sent < 2*probes || sent > probeAttempts*(probes+1) {
		t.Errorf("%d SYNs for %d unanswered probes, want up to %d tries each", sent, probes, probeAttempts)
	}
	t.Logf("%d SYNs for %d unanswered probes", sent, probes)

	unrouted := netip.MustParseAddr("10.99.0.1")
	before, _, _ := obs.count()
	l := reg.Acquire(Target{Addr: unrouted, Spec: tcpSpec(port)}, p, "z.")
	<-l.Checked()
	last := obs.changeAfter(t, before)
	if l.Up() || !errors.Is(last.Err, syscall.ENETUNREACH) {
		t.Errorf("unrouted %s: up=%v, error %v; want down with network is unreachable", unrouted, l.Up(), last.Err)
	}
	l.Release()

	_, lport := listenTCP(t)
	healthy := reg.Acquire(Target{Addr: loopback4, Spec: tcpSpec(lport)}, p, "z.")
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
