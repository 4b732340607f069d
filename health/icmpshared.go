package health

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"time"

	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
)

// RawICMPProber pings through one raw ICMP socket per address family, shared by every probe,
// and matches each echo reply to its probe by (address, sequence).
//
// It exists because a raw socket receives every ICMP packet the host gets: with one socket per
// probe (pro-bing's design) N concurrent probes make the kernel deliver or filter N×N packets,
// and 10,000 targets at 1s never finish a round (bench/RESULTS.md). Unprivileged datagram ping
// sockets do not have that problem (the kernel routes each reply to the socket that sent the
// request), so ICMPProber keeps serving that mode.
//
// Its monitors are probed from its probeLoop, which it is the wire of: every echo request that
// is due goes out in one sendmmsg, and every reply that has come is read in one recvmmsg.
type RawICMPProber struct {
	probeLoop
	id int // echo identifier of this prober's requests

	// Guarded by probeLoop.mu.
	conns   [2]*rawConn               // by family: 0 IPv4, 1 IPv6; open while retained
	flight  map[echoKey]*scheduled    // the loop's probes awaiting a reply
	waiting map[echoKey]chan struct{} // Probe calls awaiting a reply
	seq     uint16                    // of the last request

	// The loop goroutine's, reused at every wake.
	rawBatch
	keys    []echoKey
	answers []answer // of answered
}

type echoKey struct {
	addr netip.Addr
	seq  uint16
}

// echoTarget is what RawICMPProber keeps of a scheduled target. Its destination and request live
// in it rather than behind pointers of their own: a try reads only the object the loop has
// just read, and a target costs one allocation rather than three.
type echoTarget struct {
	to     rawAddr
	family int
	buf    [echoRequestLen]byte
	seq    uint16 // of the probe in flight; its tries repeat it, so a late reply counts
}

const (
	echoPayload    = "healthdns"
	echoRequestLen = 8 + len(echoPayload) // the ICMP header and the payload
)

const readBatch = 64

// NewRawICMPProber returns a prober; it needs CAP_NET_RAW when it first probes.
func NewRawICMPProber() *RawICMPProber {
	p := &RawICMPProber{
		id:       int(rand.N[uint16](65535)) + 1,
		flight:   map[echoKey]*scheduled{},
		waiting:  map[echoKey]chan struct{}{},
		rawBatch: newRawBatch(),
	}
	p.init(p)
	return p
}

// Probe implements Prober: one echo, outside any monitor's schedule.
func (p *RawICMPProber) Probe(ctx context.Context, addr netip.Addr) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("icmp: not sent: %w", err) // loopback would answer before we look again
	}
	within := probeTimeout(ctx)
	addr = addr.Unmap()
	family := familyOf(addr)
	p.mu.Lock()
	conn, err := p.connLocked(family)
	if err != nil {
		p.mu.Unlock()
		return fmt.Errorf("icmp: %w", err)
	}
	p.seq++
	key := echoKey{addr: addr, seq: p.seq}
	replied := make(chan struct{})
	p.waiting[key] = replied
	p.mu.Unlock()
	p.poke() // the loop reads replies only while something awaits one
	defer func() {
		p.mu.Lock()
		delete(p.waiting, key)
		p.mu.Unlock()
	}()

	packet := echoRequest(family, p.id)
	setEchoSeq(family, packet[:], key.seq)
	if _, err := conn.WriteTo(packet[:], &net.IPAddr{IP: addr.AsSlice(), Zone: addr.Zone()}); err != nil {
		return fmt.Errorf("icmp: %w", unwrapDial(ctx, within, err))
	}
	select {
	case <-replied:
		return nil
	case <-ctx.Done():
		if errors.Is(ctx.Err(), context.Canceled) {
			return fmt.Errorf("icmp: cancelled: %w", ctx.Err())
		}
		return fmt.Errorf("icmp: %w", errNoReply{within})
	}
}

// connLocked returns the family's socket, opening it on first use.
func (p *RawICMPProber) connLocked(family int) (*rawConn, error) {
	if c := p.conns[family]; c != nil {
		return c, nil
	}
	if p.users == 0 {
		return nil, fmt.Errorf("prober is not retained by any monitor")
	}
	network := "ip4:icmp"
	if family == 1 {
		network = "ip6:ipv6-icmp"
	}
	c, err := listenRawICMP(network, family == 0)
	if err != nil {
		return nil, err
	}
	rc, err := newRawConn(c)
	if err != nil {
		c.Close()
		return nil, err
	}
	p.conns[family] = rc
	return rc, nil
}

func (p *RawICMPProber) prepare(s *scheduled) {
	family := familyOf(s.addr)
	s.echo = echoTarget{to: *newRawAddr(s.addr), family: family, buf: echoRequest(family, p.id)}
}

func (p *RawICMPProber) try(s *scheduled, first bool) error {
	e := &s.echo
	if first {
		if _, err := p.connLocked(e.family); err != nil {
			return fmt.Errorf("icmp: %w", err)
		}
		p.seq++
		e.seq = p.seq
		p.flight[echoKey{s.addr, e.seq}] = s
	}
	setEchoSeq(e.family, e.buf[:], e.seq)
	p.queueTry(e.family, e.buf[:], &e.to, s)
	return nil
}

func (p *RawICMPProber) end(s *scheduled) { delete(p.flight, echoKey{s.addr, s.echo.seq}) }

func (p *RawICMPProber) busy() bool { return len(p.waiting) > 0 }

func (p *RawICMPProber) timedOut(s *scheduled, took time.Duration) error {
	return fmt.Errorf("icmp: %w", errNoReply{s.timeout})
}

func (p *RawICMPProber) close() {
	for i, c := range p.conns {
		if c != nil {
			c.Close()
			p.conns[i] = nil
		}
	}
}

func (p *RawICMPProber) openConns() [2]*rawConn {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.conns
}

// poll drains both sockets without waiting and keeps the (source, sequence) of every echo
// reply of ours.
func (p *RawICMPProber) poll() {
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

func (p *RawICMPProber) answered() []answer {
	answers := p.answers[:0]
	for _, key := range p.keys {
		if ch := p.waiting[key]; ch != nil {
			delete(p.waiting, key)
			close(ch)
		} else if s := p.flight[key]; s != nil { // not late, for a probe that timed out
			answers = append(answers, answer{s: s})
		}
	}
	p.answers = answers
	return answers
}

// flush writes the queued requests, a batch per family.
func (p *RawICMPProber) flush() []answer {
	return p.rawBatch.flush(p.openConns(), func(_ *scheduled, err error) error { return fmt.Errorf("icmp: %w", err) })
}

// rawBatch is what a wire over raw sockets (one per address family) keeps for its loop's
// goroutine: the buffers it reads into, and the tries queued for the next flush.
type rawBatch struct {
	in      rawInbox
	sends   [2]rawOutbox
	refusal []answer // of flush
}

// rawOutbox is a family's tries queued for the next flush.
type rawOutbox struct {
	packets [][]byte
	to      []*rawAddr
	sentTo  []*scheduled
	scratch sendScratch
}

func newRawBatch() rawBatch { return rawBatch{in: newRawInbox()} }

// queueTry adds a try of s to the next flush: packet, to be sent to "to" through family's socket.
func (b *rawBatch) queueTry(family int, packet []byte, to *rawAddr, s *scheduled) {
	o := &b.sends[family]
	o.packets = append(o.packets, packet)
	o.to = append(o.to, to)
	o.sentTo = append(o.sentTo, s)
}

// drain hands take every packet c has received, and its source, without waiting. c may be nil.
func (b *rawBatch) drain(c *rawConn, take func(packet []byte, from netip.Addr)) {
	for c != nil {
		n, err := c.recvBatch(&b.in)
		for i := range n {
			take(b.in.packet(i))
		}
		if err != nil || n < readBatch {
			return // drained, or closed by release
		}
	}
}

// flush writes the queued tries through conns, a batch per family, and returns those the
// kernel refused to send (no route, say), each with the error wrap makes of the cause.
func (b *rawBatch) flush(conns [2]*rawConn, wrap func(s *scheduled, err error) error) []answer {
	failed := b.refusal[:0]
	for family := range b.sends {
		o := &b.sends[family]
		for i := 0; i < len(o.packets); {
			n, err := conns[family].sendBatch(o, i)
			i += n
			if err != nil && i < len(o.packets) {
				s := o.sentTo[i]
				failed = append(failed, answer{s, wrap(s, unwrapDial(context.Background(), s.timeout, err))})
				i++
			}
		}
		clear(o.packets)
		o.packets = o.packets[:0]
		clear(o.to)
		o.to = o.to[:0]
		clear(o.sentTo)
		o.sentTo = o.sentTo[:0]
	}
	b.refusal = failed
	return failed
}

func familyOf(addr netip.Addr) int {
	if addr.Is4() {
		return 0
	}
	return 1
}

// echoRequest builds an echo request of ours; setEchoSeq numbers it.
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
		binary.BigEndian.PutUint16(b[2:], checksum(b))
	}
}

// checksum is the Internet checksum (RFC 1071).
func checksum(b []byte) uint16 {
	var sum uint32
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(b[i])<<8 | uint32(b[i+1])
	}
	if len(b)%2 == 1 {
		sum += uint32(b[len(b)-1]) << 8
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	return ^uint16(sum)
}

// parseEchoReply returns the key of an echo reply with our identifier. An IPv4 raw socket
// receives the IP header too; an IPv6 one does not.
func parseEchoReply(family int, b []byte, from netip.Addr, id int) (echoKey, bool) {
	if family == 0 && len(b) > 0 && b[0]>>4 == 4 {
		hl := int(b[0]&0x0f) * 4
		if len(b) < hl {
			return echoKey{}, false
		}
		b = b[hl:]
	}
	reply := byte(ipv4.ICMPTypeEchoReply)
	if family == 1 {
		reply = byte(ipv6.ICMPTypeEchoReply)
	}
	if len(b) < 8 || b[0] != reply || int(binary.BigEndian.Uint16(b[4:])) != id {
		return echoKey{}, false // another process's ping, or not an echo reply
	}
	if !from.IsValid() {
		return echoKey{}, false
	}
	return echoKey{addr: from.Unmap(), seq: binary.BigEndian.Uint16(b[6:])}, true
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
		} else if err = setDontFragment(c); err != nil {
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
	setReceiveBuffer(c, rawReceiveBuffer)
	return c, nil
}
