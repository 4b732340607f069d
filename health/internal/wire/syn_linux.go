package wire

import (
	"context"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"syscall"
	"time"

	"golang.org/x/net/bpf"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
	"golang.org/x/sys/unix"

	"github.com/healthdns/healthdns/health/internal/engine"
	"github.com/healthdns/healthdns/health/internal/rawsock"
)

// HalfOpen probes TCP checks without opening connections, as a SYN scan does: each try is
// a SYN written to a raw socket, and the backend's answer is read from the same socket. A
// SYN-ACK means it listens; a reset means the port is closed ("connection refused"). The
// kernel, which has no connection for the SYN-ACK, answers it with a reset of its own, so the
// backend's half-open entry goes at once and its application never sees the probe.
//
// It tests what a connect test does: the SYN-ACK and the connect's completion both come from
// the backend's kernel, and both stop when its accept queue is full. What it saves is the
// socket, the handshake's last ACK, the accepted connection and its reset, which on loopback
// took 71 µs of CPU per probe against 19 µs here (bench/RESULTS.md). It needs CAP_NET_RAW
// (rawsock.TCPAllowed); without it, TCP checks use Connect.
//
// Its SYNs leave from synPorts local ports per family, each reserved by a socket bound to it that
// never listens, so no connection of the host can take them and the kernel resets every SYN-ACK
// to them. Each try of a target leaves from the next port: a try is a new connection attempt,
// as a connect's fresh socket is, not a retransmission that the backend rate-limits, and a
// half-open entry whose reset was lost does not stand in the way of the next probe. A BPF filter
// on the raw socket (which receives a copy of every TCP segment the host gets) queues only the
// segments to those ports.
type HalfOpen struct {
	// Guarded by the loop's mutex.
	flight map[synKey]*engine.Slot[HalfOpenState]
	// A family's socket that would not open: each try fails with the same error until the
	// retry time, rather than every due target walking the port range again.
	openErr     [2]error
	openRetryAt [2]time.Time
	// The range to reserve ports in: the kernel's ephemeral range when the wire was made.
	portsLow, portsHigh int

	connMu sync.Mutex  // guards conns, which Try opens and Poll and Flush read
	conns  [2]*synConn // by family: 0 IPv4, 1 IPv6; open while the loop is retained

	// The loop goroutine's, reused at every wake.
	rawBatch[HalfOpenState]
	replies []synReply
	answers []engine.Answer[HalfOpenState]
}

// synConn is a raw TCP socket and the local ports its SYNs come from.
type synConn struct {
	*rawsock.Conn
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

// HalfOpenState is what HalfOpen keeps of a scheduled target; in it, as EchoState.
type HalfOpenState struct {
	to     rawsock.Addr
	port   uint16
	family int
	src    netip.Addr // the IPv4 source the kernel routes from, for the checksum; invalid: look it up
	header [tcpHeaderLen]byte
	isn    uint32 // of the probe in flight; its tries repeat it, so a late answer counts
	tries  uint32 // every try ever sent, which picks the next try's local port
}

const tcpHeaderLen = 20

// NewHalfOpen returns a half-open wire.
func NewHalfOpen() *HalfOpen {
	p := &HalfOpen{flight: map[synKey]*engine.Slot[HalfOpenState]{}, rawBatch: newRawBatch[HalfOpenState]()}
	p.portsLow, p.portsHigh = rawsock.EphemeralPorts(synPorts)
	return p
}

// Prepare implements engine.Wire.
func (p *HalfOpen) Prepare(s *engine.Slot[HalfOpenState], t *engine.Target) {
	s.State = HalfOpenState{to: *rawsock.NewAddr(s.Addr), port: t.Port, family: familyOf(s.Addr)}
}

// Try implements engine.Wire.
func (p *HalfOpen) Try(s *engine.Slot[HalfOpenState], first bool) error {
	t := &s.State
	c, err := p.connLocked(t.family)
	if err != nil {
		return tcpFailure(t.port, err)
	}
	if first {
		if t.family == 0 && !t.src.IsValid() {
			if t.src, err = rawsock.RouteSource(s.Addr); err != nil {
				return tcpFailure(t.port, err)
			}
		}
		t.isn = rand.Uint32()
		p.flight[keyOf(s)] = s
	}
	writeSYN(t.header[:], c.base+uint16(t.tries%synPorts), t.port, t.isn, t.src, s.Addr)
	t.tries++
	p.queueTry(t.family, t.header[:], &t.to, s)
	return nil
}

func keyOf(s *engine.Slot[HalfOpenState]) synKey {
	return synKey{addr: s.Addr, port: s.State.port, isn: s.State.isn}
}

// End implements engine.Wire.
func (p *HalfOpen) End(s *engine.Slot[HalfOpenState]) { delete(p.flight, keyOf(s)) }

// TimedOut implements engine.Wire. It also forgets the target's source address: a route that
// changed is one reason for silence, and the next probe looks it up again.
func (p *HalfOpen) TimedOut(s *engine.Slot[HalfOpenState], took time.Duration) error {
	s.State.src = netip.Addr{}
	return tcpFailure(s.State.port, errTimeout{s.Timeout(), context.DeadlineExceeded})
}

// Close implements engine.Wire.
func (p *HalfOpen) Close() {
	p.connMu.Lock()
	defer p.connMu.Unlock()
	for i, c := range p.conns {
		if c != nil {
			c.close()
			p.conns[i] = nil
		}
	}
}

func (p *HalfOpen) openConns() [2]*synConn {
	p.connMu.Lock()
	defer p.connMu.Unlock()
	return p.conns
}

// Poll implements engine.Wire: it drains both sockets without waiting and keeps every answer to
// one of our SYNs.
func (p *HalfOpen) Poll() {
	replies := p.replies[:0]
	for family, c := range p.openConns() {
		if c == nil {
			continue
		}
		p.drain(c.Conn, func(b []byte, from netip.Addr) {
			if r, ok := parseSYNReply(family, b, from, c.base); ok {
				replies = append(replies, r)
			}
		})
	}
	p.replies = replies
}

// Answered implements engine.Wire.
func (p *HalfOpen) Answered() []engine.Answer[HalfOpenState] {
	answers := p.answers[:0]
	for _, r := range p.replies {
		s := p.flight[r.key]
		if s == nil {
			continue // late, for a probe that timed out
		}
		var err error
		if r.reset {
			err = tcpFailure(s.State.port, syscall.ECONNREFUSED)
		}
		answers = append(answers, engine.Answer[HalfOpenState]{Slot: s, Err: err})
	}
	p.answers = answers
	return answers
}

// Flush implements engine.Wire: it writes the queued SYNs, a batch per family.
func (p *HalfOpen) Flush() []engine.Answer[HalfOpenState] {
	var conns [2]*rawsock.Conn
	for family, c := range p.openConns() {
		if c != nil {
			conns[family] = c.Conn
		}
	}
	return p.rawBatch.flush(conns, func(s *engine.Slot[HalfOpenState], err error) error { return tcpFailure(s.State.port, err) })
}

// connLocked returns the family's socket, opening it and reserving its ports on first use.
func (p *HalfOpen) connLocked(family int) (*synConn, error) {
	p.connMu.Lock()
	defer p.connMu.Unlock()
	if c := p.conns[family]; c != nil {
		return c, nil
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
	rc, err := rawsock.NewConn(pc.(*net.IPConn))
	if err != nil {
		pc.Close()
		return nil, err
	}
	c := &synConn{Conn: rc} // not a named result, which the error returns set to nil
	defer func() {
		if err != nil {
			c.close()
		}
	}()
	if c.base, c.reserved, err = rawsock.ReservePorts(family, synPorts, low, high); err != nil {
		return nil, err
	}
	if family == 0 {
		err = ipv4.NewPacketConn(c.IPConn).SetBPF(synReplyFilter(0, c.base))
		if err == nil {
			if err = rawsock.SetDontFragment(c.IPConn); err != nil {
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
	rawsock.SetReceiveBuffer(c.IPConn, rawReceiveBuffer)
	return c, nil
}

func (c *synConn) close() {
	c.Close()
	for _, fd := range c.reserved {
		unix.Close(fd)
	}
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
		binary.BigEndian.PutUint16(b[16:], rawsock.Checksum(append(pseudo, b...)))
	}
}

// parseSYNReply returns the probe a segment answers: a SYN-ACK, or a reset with an ACK (a closed
// port's answer to a SYN), to one of our ports (base on). The acknowledgment names the SYN.
func parseSYNReply(family int, b []byte, from netip.Addr, base uint16) (synReply, bool) {
	if family == 0 {
		// The header's length counts its 20 fixed bytes: a shorter one would have the TCP
		// header read from inside the IP header (FuzzSYNReply's seed ihl-below-five).
		if len(b) < 20 || b[0]>>4 != 4 || b[9] != unix.IPPROTO_TCP {
			return synReply{}, false
		}
		hl := int(b[0]&0x0f) * 4
		if hl < 20 || len(b) < hl {
			return synReply{}, false
		}
		b = b[hl:]
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
