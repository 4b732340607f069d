package wire

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"time"

	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"

	"github.com/healthdns/healthdns/health/internal/engine"
	"github.com/healthdns/healthdns/health/internal/rawsock"
)

// Echo pings through one raw ICMP socket per address family, shared by every probe of its
// loop, and matches each echo reply to its probe by (address, sequence, token).
//
// It exists because a raw socket receives every ICMP packet the host gets: with one socket per
// probe (pro-bing's design) N concurrent probes make the kernel deliver or filter N×N packets,
// and 10,000 targets at 1s never finish a round (bench/RESULTS.md). Unprivileged datagram ping
// sockets do not have that problem (the kernel routes each reply to the socket that sent the
// request), so Ping keeps serving that mode, on a blocking wire.
//
// Every echo request that is due goes out in one sendmmsg, and every reply that has come is
// read in one recvmmsg. It needs CAP_NET_RAW when it first probes.
type Echo struct {
	id int // echo identifier of this wire's requests

	// Guarded by the loop's mutex.
	flight map[echoKey]*engine.Slot[EchoState] // the loop's probes awaiting a reply
	seq    uint16                              // of the last request

	connMu sync.Mutex       // guards conns, which Try opens and Poll and Flush read
	conns  [2]*rawsock.Conn // by family: 0 IPv4, 1 IPv6; open while the loop is retained

	// The loop goroutine's, reused at every wake.
	rawBatch[EchoState]
	keys    []echoKey
	answers []engine.Answer[EchoState]
}

// echoKey names a probe's echo request: the address it went to, its sequence number and the
// random token in its payload, which a reply must carry back (RFC 792: the data is returned).
// The sequence number alone is guessable by a hostile backend, which sees its own requests'
// identifier and sequence numbers, and the next ones are close: spoofing a dead neighbour's
// address with them would keep it up. The token is seen only by the host the request goes to.
type echoKey struct {
	addr  netip.Addr
	seq   uint16
	token uint64
}

// EchoState is what Echo keeps of a scheduled target. Its destination and request live in it
// rather than behind pointers of their own: a try reads only the object the loop has just read.
type EchoState struct {
	to     rawsock.Addr
	family int
	buf    [echoRequestLen]byte
	seq    uint16 // of the probe in flight; its tries repeat it, so a late reply counts
	token  uint64 // of the probe in flight, as seq
}

const (
	echoPayload    = "healthdns"
	echoTokenAt    = 8 + len(echoPayload)
	echoRequestLen = echoTokenAt + 8 // the ICMP header, the payload and the probe's token
)

// NewEcho returns an echo wire.
func NewEcho() *Echo {
	return &Echo{
		id:       int(rand.N[uint16](65535)) + 1,
		flight:   map[echoKey]*engine.Slot[EchoState]{},
		rawBatch: newRawBatch[EchoState](),
	}
}

// connLocked returns the family's socket, opening it on first use.
func (p *Echo) connLocked(family int) (*rawsock.Conn, error) {
	p.connMu.Lock()
	defer p.connMu.Unlock()
	if c := p.conns[family]; c != nil {
		return c, nil
	}
	network := "ip4:icmp"
	if family == 1 {
		network = "ip6:ipv6-icmp"
	}
	c, err := listenRawICMP(network, family == 0)
	if err != nil {
		return nil, err
	}
	rc, err := rawsock.NewConn(c)
	if err != nil {
		c.Close()
		return nil, err
	}
	p.conns[family] = rc
	return rc, nil
}

// Prepare implements engine.Wire.
func (p *Echo) Prepare(s *engine.Slot[EchoState], _ *engine.Target) {
	family := familyOf(s.Addr)
	s.State = EchoState{to: *rawsock.NewAddr(s.Addr), family: family, buf: echoRequest(family, p.id)}
}

// Try implements engine.Wire.
func (p *Echo) Try(s *engine.Slot[EchoState], first bool) error {
	e := &s.State
	if first {
		if _, err := p.connLocked(e.family); err != nil {
			return fmt.Errorf("icmp: %w", err)
		}
		p.seq++
		e.seq, e.token = p.seq, rand.Uint64()
		binary.BigEndian.PutUint64(e.buf[echoTokenAt:], e.token)
		p.flight[echoKey{s.Addr, e.seq, e.token}] = s
	}
	setEchoSeq(e.family, e.buf[:], e.seq)
	p.queueTry(e.family, e.buf[:], &e.to, s)
	return nil
}

// End implements engine.Wire.
func (p *Echo) End(s *engine.Slot[EchoState]) {
	delete(p.flight, echoKey{s.Addr, s.State.seq, s.State.token})
}

// TimedOut implements engine.Wire.
func (p *Echo) TimedOut(s *engine.Slot[EchoState], _ time.Duration) error {
	return fmt.Errorf("icmp: %w", errNoReply{s.Timeout()})
}

// Close implements engine.Wire.
func (p *Echo) Close() {
	p.connMu.Lock()
	defer p.connMu.Unlock()
	for i, c := range p.conns {
		if c != nil {
			c.Close()
			p.conns[i] = nil
		}
	}
}

func (p *Echo) openConns() [2]*rawsock.Conn {
	p.connMu.Lock()
	defer p.connMu.Unlock()
	return p.conns
}

// Poll implements engine.Wire: it drains both sockets without waiting and keeps the (source,
// sequence, token) of every echo reply of ours.
func (p *Echo) Poll() {
	keys := p.keys[:0]
	for family, c := range p.openConns() {
		p.drain(c, func(b []byte, from netip.Addr) {
			if key, ok := parseEchoReply(family, b, from, p.id); ok {
				keys = append(keys, key)
			}
		})
	}
	p.keys = keys
}

// Answered implements engine.Wire.
func (p *Echo) Answered() []engine.Answer[EchoState] {
	answers := p.answers[:0]
	for _, key := range p.keys {
		if s := p.flight[key]; s != nil { // not late, for a probe that timed out
			answers = append(answers, engine.Answer[EchoState]{Slot: s})
		}
	}
	p.answers = answers
	return answers
}

// Flush implements engine.Wire: it writes the queued requests, a batch per family.
func (p *Echo) Flush() []engine.Answer[EchoState] {
	return p.rawBatch.flush(p.openConns(), func(_ *engine.Slot[EchoState], err error) error { return fmt.Errorf("icmp: %w", err) })
}

// echoRequest builds an echo request of ours; Try writes its token, and setEchoSeq numbers it.
func echoRequest(family, id int) [echoRequestLen]byte {
	var b [echoRequestLen]byte
	b[0] = byte(ipv4.ICMPTypeEcho)
	if family == 1 {
		b[0] = byte(ipv6.ICMPTypeEchoRequest) // the kernel fills in the ICMPv6 checksum
	}
	binary.BigEndian.PutUint16(b[4:], uint16(id))
	copy(b[8:], echoPayload)
	return b
}

func setEchoSeq(family int, b []byte, seq uint16) {
	binary.BigEndian.PutUint16(b[6:], seq)
	if family == 0 {
		b[2], b[3] = 0, 0
		binary.BigEndian.PutUint16(b[2:], rawsock.Checksum(b))
	}
}

// parseEchoReply returns the key of an echo reply with our identifier and a payload as long as
// ours. An IPv4 raw socket receives the IP header too; an IPv6 one does not.
func parseEchoReply(family int, b []byte, from netip.Addr, id int) (echoKey, bool) {
	if family == 0 && len(b) > 0 && b[0]>>4 == 4 {
		// A header shorter than its 20 fixed bytes is none: skipping it would read our id
		// from inside the header (FuzzEchoReply's seed ihl-below-five).
		hl := int(b[0]&0x0f) * 4
		if hl < ipv4.HeaderLen || len(b) < hl {
			return echoKey{}, false
		}
		b = b[hl:]
	}
	reply := byte(ipv4.ICMPTypeEchoReply)
	if family == 1 {
		reply = byte(ipv6.ICMPTypeEchoReply)
	}
	if len(b) < echoRequestLen || b[0] != reply || int(binary.BigEndian.Uint16(b[4:])) != id {
		return echoKey{}, false // another process's ping, or not an echo reply
	}
	if !from.IsValid() {
		return echoKey{}, false
	}
	return echoKey{addr: from.Unmap(), seq: binary.BigEndian.Uint16(b[6:]), token: binary.BigEndian.Uint64(b[echoTokenAt:])}, true
}

// rawReceiveBuffer holds a first round's burst of replies: a socket that overflows drops them,
// and a dropped reply is a failed probe.
const rawReceiveBuffer = 8 << 20

// listenRawICMP opens a raw ICMP socket that queues only echo replies (the kernel's ICMP filter
// drops the rest, among them the copies of our own requests that loopback delivers) into a
// large receive buffer.
func listenRawICMP(network string, v4 bool) (*net.IPConn, error) {
	pc, err := net.ListenPacket(network, "")
	if err != nil {
		return nil, err
	}
	c := pc.(*net.IPConn)
	if v4 {
		var f ipv4.ICMPFilter
		f.SetAll(true)
		f.Accept(ipv4.ICMPTypeEchoReply)
		if err = ipv4.NewPacketConn(c).SetICMPFilter(&f); err != nil {
			err = fmt.Errorf("setting the ICMP filter: %w", err)
		} else if err = rawsock.SetDontFragment(c); err != nil {
			err = fmt.Errorf("setting DF: %w", err)
		}
	} else {
		var f ipv6.ICMPFilter
		f.SetAll(true)
		f.Accept(ipv6.ICMPTypeEchoReply)
		if err = ipv6.NewPacketConn(c).SetICMPFilter(&f); err != nil {
			err = fmt.Errorf("setting the ICMP filter: %w", err)
		}
	}
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("raw icmp socket: %w", err)
	}
	rawsock.SetReceiveBuffer(c, rawReceiveBuffer)
	return c, nil
}
