package health

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"syscall"
	"time"

	"golang.org/x/net/bpf"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
	"golang.org/x/sys/unix"
)

// halfOpenProber probes TCP checks without opening connections, as a SYN scan does: each try is
// a SYN written to a raw socket, and the backend's answer is read from the same socket. A
// SYN-ACK means it listens; a reset means the port is closed ("connection refused"). The
// kernel, which has no connection for the SYN-ACK, answers it with a reset of its own, so the
// backend's half-open entry goes at once and its application never sees the probe.
//
// It tests what a connect test does: the SYN-ACK and the connect's completion both come from
// the backend's kernel, and both stop when its accept queue is full. What it saves is the
// socket, the handshake's last ACK, the accepted connection and its reset, which on loopback
// took 71 µs of CPU per probe against 19 µs here (bench/RESULTS.md). It needs CAP_NET_RAW;
// without it the registry uses the tcpConnector.
//
// Its SYNs leave from synPorts local ports per family, each reserved by a socket bound to it that
// never listens, so no connection of the host can take them and the kernel resets every SYN-ACK
// to them. Each try of a target leaves from the next port: a try is a new connection attempt,
// as a connect's fresh socket is, not a retransmission that the backend rate-limits, and a
// half-open entry whose reset was lost does not stand in the way of the next probe. A BPF filter
// on the raw socket (which receives a copy of every TCP segment the host gets) queues only the
// segments to those ports.
type halfOpenProber struct {
	probeLoop

	// Guarded by probeLoop.mu.
	conns  [2]*synConn // by family: 0 IPv4, 1 IPv6; open while retained
	flight map[synKey]*scheduled
	// A family's socket that would not open: each try fails with the same error until the
	// retry time, rather than every due target walking the port range again.
	openErr     [2]error
	openRetryAt [2]time.Time
	// The range to reserve ports in: the kernel's ephemeral range when the prober was made.
	portsLow, portsHigh int

	// The loop goroutine's, reused at every wake.
	rawBatch
	replies []synReply
	answers []answer
}

// synConn is a raw TCP socket and the local ports its SYNs come from.
type synConn struct {
	*rawConn
	base     uint16 // the ports are base to base+synPorts-1
	reserved []int  // the sockets bound to them
}

// synPorts is how many local ports a family's SYNs rotate through. A target reuses a 4-tuple
// every synPorts tries; by then the backend has long dropped a half-open entry whose SYN-ACK was
// lost (it resends that SYN-ACK after 1 and 3 s, and our kernel resets it). With 16 ports, at
// 100 ms and 30% loss, stale entries doubled the failed probes (test/lab TestLossAndJitter).
const synPorts = 64

// openRetryDelay spaces the attempts to open a raw socket that failed to open.
const openRetryDelay = time.Second

// synKey names a probe's SYN: the backend that answers it and the sequence number it chose.
type synKey struct {
	addr netip.Addr
	port uint16
	isn  uint32
}

type synReply struct {
	key   synKey
	reset bool
}

// synTarget is what a halfOpenProber keeps of a scheduled target; in it, as echoTarget.
type synTarget struct {
	to     rawAddr
	family int
	src    netip.Addr // the IPv4 source the kernel routes from, for the checksum; invalid: look it up
	header [tcpHeaderLen]byte
	isn    uint32 // of the probe in flight; its tries repeat it, so a late answer counts
	tries  uint32 // every try ever sent, which picks the next try's local port
}

const tcpHeaderLen = 20

func newHalfOpenProber() *halfOpenProber {
	p := &halfOpenProber{flight: map[synKey]*scheduled{}, rawBatch: newRawBatch()}
	p.portsLow, p.portsHigh = ephemeralPorts()
	p.init(p)
	return p
}

// rawTCPAllowed reports whether this process may open raw TCP sockets (CAP_NET_RAW).
func rawTCPAllowed() bool {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_TCP)
	if err != nil {
		return false
	}
	unix.Close(fd)
	return true
}

func (p *halfOpenProber) prepare(s *scheduled) {
	s.syn = synTarget{to: *newRawAddr(s.addr), family: familyOf(s.addr)}
}

func (p *halfOpenProber) try(s *scheduled, first bool) error {
	t := &s.syn
	c, err := p.connLocked(t.family)
	if err != nil {
		return tcpFailure(s, err)
	}
	if first {
		if t.family == 0 && !t.src.IsValid() {
			if t.src, err = routeSource(s.addr); err != nil {
				return tcpFailure(s, err)
			}
		}
		t.isn = rand.Uint32()
		p.flight[p.keyOf(s)] = s
	}
	writeSYN(t.header[:], c.base+uint16(t.tries%synPorts), s.m.target.Spec.Check.Port, t.isn, t.src, s.addr)
	t.tries++
	p.queueTry(t.family, t.header[:], &t.to, s)
	return nil
}

func (p *halfOpenProber) keyOf(s *scheduled) synKey {
	return synKey{addr: s.addr, port: s.m.target.Spec.Check.Port, isn: s.syn.isn}
}

func (p *halfOpenProber) end(s *scheduled) { delete(p.flight, p.keyOf(s)) }

func (p *halfOpenProber) busy() bool { return false }

// timedOut also forgets the target's source address: a route that changed is one reason for
// silence, and the next probe looks it up again.
func (p *halfOpenProber) timedOut(s *scheduled, took time.Duration) error {
	s.syn.src = netip.Addr{}
	return tcpFailure(s, errTimeout{s.timeout, context.DeadlineExceeded})
}

func (p *halfOpenProber) close() {
	for i, c := range p.conns {
		if c != nil {
			c.close()
			p.conns[i] = nil
		}
	}
}

func (p *halfOpenProber) openConns() [2]*synConn {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.conns
}

// poll drains both sockets without waiting and keeps every answer to one of our SYNs.
func (p *halfOpenProber) poll() {
	replies := p.replies[:0]
	for family, c := range p.openConns() {
		if c == nil {
			continue
		}
		p.drain(c.rawConn, func(b []byte, from netip.Addr) {
			if r, ok := parseSYNReply(family, b, from, c.base); ok {
				replies = append(replies, r)
			}
		})
	}
	p.replies = replies
}

func (p *halfOpenProber) answered() []answer {
	answers := p.answers[:0]
	for _, r := range p.replies {
		s := p.flight[r.key]
		if s == nil {
			continue // late, for a probe that timed out
		}
		var err error
		if r.reset {
			err = tcpFailure(s, syscall.ECONNREFUSED)
		}
		answers = append(answers, answer{s, err})
	}
	p.answers = answers
	return answers
}

// flush writes the queued SYNs, a batch per family.
func (p *halfOpenProber) flush() []answer {
	var conns [2]*rawConn
	for family, c := range p.openConns() {
		if c != nil {
			conns[family] = c.rawConn
		}
	}
	return p.rawBatch.flush(conns, tcpFailure)
}

// connLocked returns the family's socket, opening it and reserving its ports on first use.
func (p *halfOpenProber) connLocked(family int) (*synConn, error) {
	if c := p.conns[family]; c != nil {
		return c, nil
	}
	if p.users == 0 {
		return nil, fmt.Errorf("prober is not retained by any monitor")
	}
	if p.openErr[family] != nil && time.Now().Before(p.openRetryAt[family]) {
		return nil, p.openErr[family]
	}
	c, err := listenRawTCP(family, p.portsLow, p.portsHigh)
	if err != nil {
		p.openErr[family], p.openRetryAt[family] = err, time.Now().Add(openRetryDelay)
		return nil, err
	}
	p.openErr[family] = nil
	p.conns[family] = c
	return c, nil
}

// listenRawTCP opens the family's raw TCP socket, reserving its ports in low-high.
func listenRawTCP(family, low, high int) (_ *synConn, err error) {
	network := "ip4:tcp"
	if family == 1 {
		network = "ip6:tcp"
	}
	pc, err := net.ListenPacket(network, "")
	if err != nil {
		return nil, err
	}
	rc, err := newRawConn(pc.(*net.IPConn))
	if err != nil {
		pc.Close()
		return nil, err
	}
	c := &synConn{rawConn: rc} // not a named result, which the error returns set to nil
	defer func() {
		if err != nil {
			c.close()
		}
	}()
	if c.base, c.reserved, err = reservePorts(family, low, high); err != nil {
		return nil, err
	}
	if family == 0 {
		err = ipv4.NewPacketConn(c.IPConn).SetBPF(synReplyFilter(0, c.base))
		if err == nil {
			if err = setDontFragment(c.IPConn); err != nil {
				err = fmt.Errorf("setting DF: %w", err)
			}
		}
	} else {
		pc := ipv6.NewPacketConn(c.IPConn)
		err = pc.SetBPF(synReplyFilter(1, c.base))
		if err == nil {
			err = pc.SetChecksum(true, 16) // the kernel sums the TCP header with its own source
		}
	}
	if err != nil {
		return nil, fmt.Errorf("raw tcp socket: %w", err)
	}
	setReceiveBuffer(c.IPConn, rawReceiveBuffer)
	return c, nil
}

func (c *synConn) close() {
	c.Close()
	for _, fd := range c.reserved {
		unix.Close(fd)
	}
}

// reservePorts binds synPorts TCP sockets of family to consecutive free ports, which it
// returns as the first port and the sockets. It looks in the kernel's ephemeral range, where
// services do not listen; bound, the ports are no longer the kernel's to hand out. A host short
// of ephemeral ports (client sockets in TIME_WAIT fill them) may have few free runs left, so it
// walks the whole range from a random start rather than guessing.
func reservePorts(family, low, high int) (base uint16, fds []int, err error) {
	bases := high - low + 2 - synPorts // the runs that fit: low .. high+1-synPorts
	start := rand.IntN(bases)
	for i := 0; i < bases; {
		base = uint16(low + (start+i)%bases)
		var taken int
		fds, taken, err = bindPorts(family, base)
		if err == nil {
			return base, fds, nil
		}
		// No run that holds the taken port can be free: go on from the port after it, or
		// from the range's start when that is past the last run.
		at := (start + i) % bases
		i += max(min(taken+1-low, bases)-at, 1)
	}
	return 0, nil, fmt.Errorf("reserving %d consecutive ports in %d-%d: none free (last: %w)", synPorts, low, high, err)
}

// bindPorts binds synPorts sockets from base on; when one will not bind it closes the rest and
// returns that port.
func bindPorts(family int, base uint16) (fds []int, taken int, err error) {
	for i := range uint16(synPorts) {
		domain, addr := unix.AF_INET, unix.Sockaddr(&unix.SockaddrInet4{Port: int(base + i)})
		if family == 1 {
			domain, addr = unix.AF_INET6, &unix.SockaddrInet6{Port: int(base + i)}
		}
		fd, err := unix.Socket(domain, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err == nil {
			if err = unix.Bind(fd, addr); err != nil {
				unix.Close(fd)
			}
		}
		if err != nil {
			for _, fd := range fds {
				unix.Close(fd)
			}
			return nil, int(base + i), fmt.Errorf("port %d: %w", base+i, err)
		}
		fds = append(fds, fd)
	}
	return fds, 0, nil
}

// ephemeralPorts returns net.ipv4.ip_local_port_range (which IPv6 shares), or its default.
func ephemeralPorts() (low, high int) {
	low, high = 32768, 60999
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return low, high
	}
	var l, h int
	if n, _ := fmt.Sscan(string(b), &l, &h); n == 2 && l > 0 && h-l+1 >= synPorts && h < 65536 {
		return l, h
	}
	return low, high
}

// synReplyFilter accepts the segments to our ports (base on) that carry an ACK or a reset. An
// IPv4 raw socket sees the IP header first; an IPv6 one sees the TCP header.
func synReplyFilter(family int, base uint16) []bpf.RawInstruction {
	prog := []bpf.Instruction{bpf.LoadMemShift{Off: 0}} // X = the IPv4 header's length
	if family == 1 {
		prog = []bpf.Instruction{bpf.LoadConstant{Dst: bpf.RegX, Val: 0}}
	}
	prog = append(prog,
		bpf.LoadIndirect{Off: 2, Size: 2}, // destination port
		bpf.JumpIf{Cond: bpf.JumpLessThan, Val: uint32(base), SkipTrue: 4},
		bpf.JumpIf{Cond: bpf.JumpGreaterOrEqual, Val: uint32(base) + synPorts, SkipTrue: 3},
		bpf.LoadIndirect{Off: 13, Size: 1}, // flags
		bpf.JumpIf{Cond: bpf.JumpBitsSet, Val: tcpACK | tcpRST, SkipFalse: 1},
		bpf.RetConstant{Val: 1 << 16},
		bpf.RetConstant{Val: 0},
	)
	raw, err := bpf.Assemble(prog)
	if err != nil {
		panic(err) // a program of constants
	}
	return raw
}

const (
	tcpSYN = 0x02
	tcpRST = 0x04
	tcpACK = 0x10
)

// writeSYN fills b with a SYN from port sport to dport. For IPv4 it sums the header with the
// pseudo-header of src and dst; for IPv6 the kernel does (IPV6_CHECKSUM).
func writeSYN(b []byte, sport, dport uint16, isn uint32, src, dst netip.Addr) {
	clear(b)
	binary.BigEndian.PutUint16(b[0:], sport)
	binary.BigEndian.PutUint16(b[2:], dport)
	binary.BigEndian.PutUint32(b[4:], isn)
	b[12] = tcpHeaderLen / 4 << 4
	b[13] = tcpSYN
	binary.BigEndian.PutUint16(b[14:], 64240) // window
	if dst.Is4() {
		s, d := src.As4(), dst.As4()
		pseudo := make([]byte, 0, 12+tcpHeaderLen) // of constant size, so on the stack
		pseudo = append(append(append(pseudo, s[:]...), d[:]...), 0, unix.IPPROTO_TCP, 0, tcpHeaderLen)
		binary.BigEndian.PutUint16(b[16:], checksum(append(pseudo, b...)))
	}
}

// routeSource returns the source address the kernel routes from to dst, as a UDP socket
// connected to it learns without sending anything.
func routeSource(dst netip.Addr) (netip.Addr, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return netip.Addr{}, err
	}
	defer unix.Close(fd)
	if err := unix.Connect(fd, &unix.SockaddrInet4{Port: 9, Addr: dst.As4()}); err != nil {
		return netip.Addr{}, err
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		return netip.Addr{}, err
	}
	in4, ok := sa.(*unix.SockaddrInet4)
	if !ok {
		return netip.Addr{}, errors.New("no IPv4 source")
	}
	return netip.AddrFrom4(in4.Addr), nil
}

// parseSYNReply returns the probe a segment answers: a SYN-ACK, or a reset with an ACK (a closed
// port's answer to a SYN), to one of our ports (base on). The acknowledgment names the SYN.
func parseSYNReply(family int, b []byte, from netip.Addr, base uint16) (synReply, bool) {
	if family == 0 {
		if len(b) < 20 || b[0]>>4 != 4 || b[9] != unix.IPPROTO_TCP || len(b) < int(b[0]&0x0f)*4 {
			return synReply{}, false
		}
		b = b[int(b[0]&0x0f)*4:]
	}
	if len(b) < tcpHeaderLen || binary.BigEndian.Uint16(b[2:])-base >= synPorts {
		return synReply{}, false
	}
	flags := b[13]
	var reset bool
	switch {
	case flags&(tcpSYN|tcpACK) == tcpSYN|tcpACK:
	case flags&(tcpRST|tcpACK) == tcpRST|tcpACK:
		reset = true
	default:
		return synReply{}, false
	}
	if !from.IsValid() {
		return synReply{}, false
	}
	key := synKey{addr: from.Unmap(), port: binary.BigEndian.Uint16(b[0:]), isn: binary.BigEndian.Uint32(b[8:]) - 1}
	return synReply{key: key, reset: reset}, true
}
