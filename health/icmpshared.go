package health

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
)

// RawICMPProber pings through one raw ICMP socket per address family, shared by every probe,
// and hands each echo reply to the probe waiting for its (address, sequence).
//
// It exists because a raw socket receives every ICMP packet the host gets: with one socket per
// probe (pro-bing's design) N concurrent probes make the kernel deliver or filter N×N packets,
// and 10,000 targets at 1s never finish a round (bench/RESULTS.md). Unprivileged datagram ping
// sockets do not have that problem (the kernel routes each reply to the socket that sent the
// request), so ICMPProber keeps serving that mode.
//
// The sockets are opened on first use and closed when the last monitor using the prober stops
// (retain/release), so no goroutine outlives the loops that need it.
type RawICMPProber struct {
	id  int // echo identifier of this prober's requests
	seq atomic.Uint32

	mu      sync.Mutex
	users   int
	conns   [2]*net.IPConn // by family: 0 IPv4, 1 IPv6
	readers sync.WaitGroup
	waiting map[echoKey]chan struct{}
}

type echoKey struct {
	addr netip.Addr
	seq  uint16
}

// NewRawICMPProber returns a prober; it needs CAP_NET_RAW when it first probes.
func NewRawICMPProber() *RawICMPProber {
	return &RawICMPProber{id: int(rand.N[uint16](65535)) + 1, waiting: map[echoKey]chan struct{}{}}
}

var echoPayload = []byte("healthdns")

// Probe implements Prober.
func (p *RawICMPProber) Probe(ctx context.Context, addr netip.Addr) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("icmp: not sent: %w", err) // loopback would answer before we look again
	}
	conn, err := p.conn(addr.Is4())
	if err != nil {
		return fmt.Errorf("icmp: %w", err)
	}
	key := echoKey{addr: addr, seq: uint16(p.seq.Add(1))}
	replied := make(chan struct{})
	p.mu.Lock()
	p.waiting[key] = replied
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		delete(p.waiting, key)
		p.mu.Unlock()
	}()

	var typ icmp.Type = ipv4.ICMPTypeEcho
	if addr.Is6() {
		typ = ipv6.ICMPTypeEchoRequest // the kernel fills in the ICMPv6 checksum
	}
	msg := icmp.Message{Type: typ, Body: &icmp.Echo{ID: p.id, Seq: int(key.seq), Data: echoPayload}}
	b, err := msg.Marshal(nil)
	if err != nil {
		return fmt.Errorf("icmp: %w", err)
	}
	start := time.Now()
	if _, err := conn.WriteTo(b, &net.IPAddr{IP: addr.AsSlice(), Zone: addr.Zone()}); err != nil {
		return fmt.Errorf("icmp: %w", unwrapDial(ctx, err))
	}
	select {
	case <-replied:
		return nil
	case <-ctx.Done():
		if errors.Is(ctx.Err(), context.Canceled) {
			return fmt.Errorf("icmp: cancelled: %w", ctx.Err())
		}
		return fmt.Errorf("icmp: %w", errNoReply{time.Since(start)})
	}
}

// conn returns the family's socket, opening it and its reader on first use.
func (p *RawICMPProber) conn(v4 bool) (*net.IPConn, error) {
	family, network, proto := 0, "ip4:icmp", 1
	if !v4 {
		family, network, proto = 1, "ip6:ipv6-icmp", 58
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if c := p.conns[family]; c != nil {
		return c, nil
	}
	if p.users == 0 {
		return nil, fmt.Errorf("prober is not retained by any monitor")
	}
	c, err := listenRawICMP(network, v4)
	if err != nil {
		return nil, err
	}
	p.conns[family] = c
	p.readers.Add(1)
	go p.read(c, proto)
	return c, nil
}

// read hands echo replies of ours to their waiting probes until the socket is closed.
func (p *RawICMPProber) read(c *net.IPConn, proto int) {
	defer p.readers.Done()
	buf := make([]byte, 1500)
	for {
		n, peer, err := c.ReadFrom(buf)
		if err != nil {
			return // closed by release
		}
		msg, err := icmp.ParseMessage(proto, buf[:n])
		if err != nil || (msg.Type != ipv4.ICMPTypeEchoReply && msg.Type != ipv6.ICMPTypeEchoReply) {
			continue // our own requests (on loopback), other ICMP traffic
		}
		echo, ok := msg.Body.(*icmp.Echo)
		if !ok || echo.ID != p.id {
			continue // another process's ping
		}
		ipAddr, ok := peer.(*net.IPAddr)
		if !ok {
			continue
		}
		from, ok := netip.AddrFromSlice(ipAddr.IP)
		if !ok {
			continue
		}
		key := echoKey{addr: from.Unmap(), seq: uint16(echo.Seq)}
		p.mu.Lock()
		replied := p.waiting[key]
		delete(p.waiting, key)
		p.mu.Unlock()
		if replied != nil {
			close(replied)
		}
	}
}

func (p *RawICMPProber) retain() {
	p.mu.Lock()
	p.users++
	p.mu.Unlock()
}

// release closes the sockets when the last user stops, and waits for their readers.
func (p *RawICMPProber) release() {
	p.mu.Lock()
	p.users--
	if p.users > 0 {
		p.mu.Unlock()
		return
	}
	for i, c := range p.conns {
		if c != nil {
			c.Close()
			p.conns[i] = nil
		}
	}
	p.mu.Unlock()
	p.readers.Wait()
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
		err = ipv4.NewPacketConn(c).SetICMPFilter(&f)
	} else {
		var f ipv6.ICMPFilter
		f.SetAll(true)
		f.Accept(ipv6.ICMPTypeEchoReply)
		err = ipv6.NewPacketConn(c).SetICMPFilter(&f)
	}
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("setting the ICMP filter: %w", err)
	}
	setReceiveBuffer(c, rawReceiveBuffer)
	return c, nil
}

// retainer is a Prober holding resources that its monitors keep open while they run.
type retainer interface {
	retain()
	release()
}
