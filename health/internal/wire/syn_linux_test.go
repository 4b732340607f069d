package wire

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"

	"github.com/healthdns/healthdns/health/internal/rawsock"
)

// The raw socket's filter queues only answers to our ports: SYN-ACKs and resets to base through
// base+synPorts-1, and nothing else of the host's TCP traffic (the copies of our own SYNs that
// loopback delivers among it).
func TestSYNReplyFilter(t *testing.T) {
	const base = 40000
	segment := func(family int, dport uint16, flags byte) []byte {
		tcp := make([]byte, tcpHeaderLen)
		binary.BigEndian.PutUint16(tcp[2:], dport)
		tcp[13] = flags
		if family == 1 {
			return tcp // an IPv6 raw socket gets no IP header
		}
		ip := make([]byte, 24) // with 4 bytes of options, to test the header-length load
		ip[0] = 0x46
		ip[9] = 6
		return append(ip, tcp...)
	}
	tests := []struct {
		name   string
		dport  uint16
		flags  byte
		accept bool
	}{
		{"SYN-ACK to the first port", base, tcpSYN | tcpACK, true},
		{"SYN-ACK to the last port", base + synPorts - 1, tcpSYN | tcpACK, true},
		{"reset to a port of ours", base + 7, tcpRST | tcpACK, true},
		{"SYN-ACK below the range", base - 1, tcpSYN | tcpACK, false},
		{"SYN-ACK above the range", base + synPorts, tcpSYN | tcpACK, false},
		{"our own SYN, looped back", base + 1, tcpSYN, false},
	}
	for family, name := range []string{"ipv4", "ipv6"} {
		vm, err := bpf.NewVM(disassemble(t, synReplyFilter(family, base)))
		if err != nil {
			t.Fatal(err)
		}
		for _, tc := range tests {
			n, err := vm.Run(segment(family, tc.dport, tc.flags))
			if err != nil {
				t.Fatal(err)
			}
			if got := n > 0; got != tc.accept {
				t.Errorf("%s, %s: accepted %v, want %v", name, tc.name, got, tc.accept)
			}
		}
	}
}

func disassemble(t *testing.T, raw []bpf.RawInstruction) []bpf.Instruction {
	t.Helper()
	prog, ok := bpf.Disassemble(raw)
	if !ok {
		t.Fatal("the filter does not disassemble")
	}
	return prog
}

// A reply is matched to its SYN by the backend's address and port and by its acknowledgment
// (our sequence number plus one); a SYN-ACK passes, a reset refuses, and anything else, or a
// packet too short for the header it claims, is not an answer.
func TestParseSYNReply(t *testing.T) {
	const base = 40000
	from := netip.AddrFrom4([4]byte{10, 0, 0, 7})
	reply := func(flags byte) []byte {
		b := make([]byte, 20+tcpHeaderLen)
		b[0], b[9] = 0x45, 6
		tcp := b[20:]
		binary.BigEndian.PutUint16(tcp[0:], 8080)
		binary.BigEndian.PutUint16(tcp[2:], base+3)
		binary.BigEndian.PutUint32(tcp[8:], 1000) // acknowledges ISN 999
		tcp[13] = flags
		return b
	}
	want := synKey{addr: netip.MustParseAddr("10.0.0.7"), port: 8080, isn: 999}
	if r, ok := parseSYNReply(0, reply(tcpSYN|tcpACK), from, base); !ok || r.key != want || r.reset {
		t.Errorf("SYN-ACK: %+v, %v; want %+v, not a reset", r, ok, want)
	}
	if r, ok := parseSYNReply(0, reply(tcpRST|tcpACK), from, base); !ok || r.key != want || !r.reset {
		t.Errorf("reset: %+v, %v; want %+v, a reset", r, ok, want)
	}
	if _, ok := parseSYNReply(0, reply(tcpACK), from, base); ok {
		t.Error("a bare ACK taken for an answer")
	}
	short := reply(tcpSYN | tcpACK)[:24]
	short[0] = 0x4f // a 60-byte header in 24 bytes
	if _, ok := parseSYNReply(0, short, from, base); ok {
		t.Error("a truncated packet taken for an answer")
	}
}

// Building a SYN, which the loop does at every try, allocates nothing: the checksum's buffer
// stays on the stack.
func TestWriteSYNAllocates(t *testing.T) {
	b := make([]byte, tcpHeaderLen)
	src, dst := netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.0.7")
	if n := testing.AllocsPerRun(100, func() { writeSYN(b, 40000, 8080, 1, src, dst) }); n != 0 {
		t.Errorf("writeSYN made %v allocations", n)
	}
}

// freePortRange finds n consecutive ports that all bind now, so a test can place its own
// obstacles in them.
func freePortRange(t *testing.T, n int) int {
	t.Helper()
	for low := 20000; low+n < 32000; low += n {
		if fds, err := bindRun(low, n); err == nil {
			closeAll(fds)
			return low
		}
	}
	t.Skipf("no %d consecutive free ports below 32000", n)
	return 0
}

func bindRun(low, n int) (fds []int, err error) {
	for port := low; port < low+n; port++ {
		fd, err := occupy(port)
		if err != nil {
			closeAll(fds)
			return nil, err
		}
		fds = append(fds, fd)
	}
	return fds, nil
}

// occupy binds a TCP socket to port without listening, as a client socket holds its port.
func occupy(port int) (int, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	if err := unix.Bind(fd, &unix.SockaddrInet4{Port: port}); err != nil {
		unix.Close(fd)
		return -1, err
	}
	return fd, nil
}

func closeAll(fds []int) {
	for _, fd := range fds {
		unix.Close(fd)
	}
}

// On a host whose ephemeral ports are nearly all taken (client sockets in TIME_WAIT), the
// half-open prober still finds a free run of synPorts if there is one, and says so when there
// is none.
func TestReservePortsFindsTheOnlyFreeRun(t *testing.T) {
	const span = 200
	low := freePortRange(t, span)
	// Taken: low+37, low+101, low+166. A run of 64 that misses all three starts at low+102.
	for _, port := range []int{low + 37, low + 101, low + 166} {
		fd, err := occupy(port)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { unix.Close(fd) })
	}
	for range 20 { // the search starts at a random place
		base, fds, err := rawsock.ReservePorts(0, synPorts, low, low+span-1)
		if err != nil {
			t.Fatalf("the free run at %d was not found: %v", low+102, err)
		}
		closeAll(fds)
		if int(base) != low+102 {
			t.Fatalf("reserved from %d, want %d", base, low+102)
		}
		if len(fds) != synPorts {
			t.Fatalf("%d sockets reserved, want %d", len(fds), synPorts)
		}
	}

	fd, err := occupy(low + 102)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	if _, _, err := rawsock.ReservePorts(0, synPorts, low, low+span-1); err == nil || !strings.Contains(err.Error(), "none free") {
		t.Fatalf("with no free run: %v, want an error that says none is free", err)
	}
}

// When its ports cannot be reserved the raw socket is closed and an error returned: this path
// once dereferenced nil and took the server down.
func TestListenRawTCPWithoutPorts(t *testing.T) {
	low, blocker := oneRunBlocked(t)
	defer unix.Close(blocker)
	before := openFiles(t)
	c, err := listenRawTCP(0, low, low+synPorts-1)
	if err == nil {
		c.close()
		t.Fatal("listenRawTCP succeeded with a port of its only run taken")
	}
	t.Logf("error: %v", err)
	if !strings.Contains(err.Error(), fmt.Sprint(low+10)) {
		t.Errorf("the error does not name the taken port %d: %v", low+10, err)
	}
	if after := openFiles(t); after != before {
		t.Errorf("open files %d before, %d after: the raw socket or a reserved port leaked", before, after)
	}
}

// oneRunBlocked returns the first port of a range that holds one run of synPorts ports, and the
// socket that holds its port low+10, so that no run is free. It skips without raw sockets.
func oneRunBlocked(t *testing.T) (low, blocker int) {
	t.Helper()
	if !rawsock.TCPAllowed() {
		t.Skip("half-open probes need raw sockets (CAP_NET_RAW)")
	}
	low = freePortRange(t, synPorts)
	blocker, err := occupy(low + 10)
	if err != nil {
		t.Fatal(err)
	}
	return low, blocker
}

func openFiles(t *testing.T) int {
	t.Helper()
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("counting open files: %v", err)
	}
	return len(entries)
}

// A socket that would not open is not tried again for every due target: tries fail with the
// same error until openRetryDelay has passed, and then the socket opens.
func TestHalfOpenRetriesOpeningAfterADelay(t *testing.T) {
	low, blocker := oneRunBlocked(t)
	p := NewHalfOpen()
	p.portsLow, p.portsHigh = low, low+synPorts-1
	defer p.Close()

	_, first := p.connLocked(0)
	if first == nil {
		unix.Close(blocker)
		t.Fatal("opened with a port of the only run taken")
	}
	unix.Close(blocker) // the run is free now, but the failure stands until the retry time
	if _, err := p.connLocked(0); err != first {
		t.Fatalf("second try: %v, want the first failure again (%v)", err, first)
	}
	p.openRetryAt[0] = time.Now().Add(-time.Nanosecond)
	c, err := p.connLocked(0)
	if err != nil {
		t.Fatalf("after the retry time: %v", err)
	}
	if int(c.base) != low {
		t.Errorf("reserved from %d, want %d", c.base, low)
	}
}
