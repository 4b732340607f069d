package health

import (
	"container/heap"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"syscall"
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
// The monitors of its targets do not probe on goroutines of their own: the prober schedules
// them (scheduler) from one loop, which wakes at most once per tick, sends every echo request
// that is due in one sendmmsg and reads every reply that has come in one recvmmsg. A goroutine,
// a timer and a context per probe cost more than the packet did: at 10,000 targets they were
// most of the prober's CPU, taken from the query path (bench/RESULTS.md).
//
// The sockets and the loop exist while some monitor or caller retains the prober
// (retain/release), so no goroutine outlives the monitors that need it.
type RawICMPProber struct {
	id    int       // echo identifier of this prober's requests
	epoch time.Time // of the event times in the queue

	mu      sync.Mutex
	users   int
	conns   [2]*rawConn               // by family: 0 IPv4, 1 IPv6
	targets map[*Monitor]*scheduled   // what the loop probes
	queue   eventQueue                // targets by their next event
	flight  map[echoKey]*scheduled    // the targets' probes awaiting a reply
	waiting map[echoKey]chan struct{} // Probe calls awaiting a reply
	seq     uint16                    // of the last request
	wake    chan struct{}             // tells the loop its schedule changed
	quit    chan struct{}             // closed by the last release: the loop returns
	done    chan struct{}             // closed when the loop has returned
}

// rawConn is a raw ICMP socket with its batch reads and writes (recvmmsg, sendmmsg).
type rawConn struct {
	*net.IPConn
	batch interface {
		ReadBatch(ms []ipv4.Message, flags int) (int, error) // ipv6.Message is the same type
		WriteBatch(ms []ipv4.Message, flags int) (int, error)
	}
}

type echoKey struct {
	addr netip.Addr
	seq  uint16
}

// loopTick bounds how often the loop wakes: every event due within one tick is handled in
// the same wake. It is also the granularity of the measured round trip and the most a probe's
// send or timeout is delayed.
const loopTick = time.Millisecond

// NewRawICMPProber returns a prober; it needs CAP_NET_RAW when it first probes.
func NewRawICMPProber() *RawICMPProber {
	return &RawICMPProber{
		id:      int(rand.N[uint16](65535)) + 1,
		epoch:   time.Now(),
		targets: map[*Monitor]*scheduled{},
		flight:  map[echoKey]*scheduled{},
		waiting: map[echoKey]chan struct{}{},
	}
}

var echoPayload = []byte("healthdns")

// scheduled is one target the loop probes, with its probe in flight if any.
type scheduled struct {
	m      *Monitor
	addr   netip.Addr // unmapped, as replies are keyed
	to     *net.IPAddr
	family int
	phased bool      // the first probe is done and the target is on its random phase
	due    time.Time // next probe, on the target's grid
	at     int64     // next event (due, the next try, or the deadline) as since(epoch), for a cheap heap
	index  int       // in the queue; -1 when not queued
	packet [][]byte  // the echo request, as one buffer of a batch message

	inFlight bool
	seq      uint16
	sent     time.Time // the first try
	deadline time.Time
	tries    int
	nextTry  time.Time
}

// Probe implements Prober: one echo, outside any monitor's schedule.
func (p *RawICMPProber) Probe(ctx context.Context, addr netip.Addr) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("icmp: not sent: %w", err) // loopback would answer before we look again
	}
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

	packet := echoRequest(family, p.id, echoPayload)
	setEchoSeq(family, packet, key.seq)
	start := time.Now()
	if _, err := conn.WriteTo(packet, &net.IPAddr{IP: addr.AsSlice(), Zone: addr.Zone()}); err != nil {
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

// schedule starts probing m's target from the loop: once at once, then every interval at a
// random phase, as Monitor.run does.
func (p *RawICMPProber) schedule(m *Monitor) {
	addr := m.target.Addr.Unmap()
	family := familyOf(addr)
	s := &scheduled{
		m:      m,
		to:     &net.IPAddr{IP: addr.AsSlice(), Zone: addr.Zone()},
		family: family,
		addr:   addr,
		due:    time.Now(),
		index:  -1,
		packet: [][]byte{echoRequest(family, p.id, echoPayload)},
	}
	p.mu.Lock()
	s.at = p.since(s.due)
	p.targets[m] = s
	heap.Push(&p.queue, s)
	p.mu.Unlock()
	p.poke()
}

// unschedule stops probing m's target. After it returns the loop starts no probe of it and
// reports no result for it, except one it had already taken out (Monitor.stop handles that).
func (p *RawICMPProber) unschedule(m *Monitor) {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := p.targets[m]
	if s == nil {
		return
	}
	delete(p.targets, m)
	if s.index >= 0 {
		heap.Remove(&p.queue, s.index)
	}
	if s.inFlight {
		delete(p.flight, echoKey{s.addr, s.seq})
	}
}

func (p *RawICMPProber) since(t time.Time) int64 { return int64(t.Sub(p.epoch)) }

func (p *RawICMPProber) poke() {
	p.mu.Lock()
	wake := p.wake
	p.mu.Unlock()
	if wake != nil {
		select {
		case wake <- struct{}{}:
		default:
		}
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
	rc := &rawConn{IPConn: c, batch: ipv4.NewPacketConn(c)}
	if family == 1 {
		rc.batch = ipv6.NewPacketConn(c)
	}
	p.conns[family] = rc
	return rc, nil
}

func (p *RawICMPProber) retain() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.users++
	if p.users == 1 {
		p.wake = make(chan struct{}, 1)
		p.quit = make(chan struct{})
		p.done = make(chan struct{})
		go p.run(newICMPLoop(), p.wake, p.quit, p.done)
	}
}

// release closes the sockets and ends the loop when the last user stops.
func (p *RawICMPProber) release() {
	p.mu.Lock()
	p.users--
	if p.users > 0 {
		p.mu.Unlock()
		return
	}
	close(p.quit)
	done := p.done
	p.mu.Unlock()
	<-done
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.users > 0 {
		return // retained again meanwhile: a new loop runs on these sockets
	}
	for i, c := range p.conns {
		if c != nil {
			c.Close()
			p.conns[i] = nil
		}
	}
	p.wake = nil
}

// icmpLoop holds the loop's buffers, reused at every wake.
type icmpLoop struct {
	in      []ipv4.Message // ipv4.Message and ipv6.Message are the same type
	keys    []echoKey
	sends   [2][]ipv4.Message
	sentTo  [2][]*scheduled
	reports []report
}

type report struct {
	m *Monitor
	r Result
}

const readBatch = 64

func newICMPLoop() *icmpLoop {
	l := &icmpLoop{in: make([]ipv4.Message, readBatch)}
	for i := range l.in {
		l.in[i].Buffers = [][]byte{make([]byte, 1500)}
	}
	return l
}

// run is the loop: read the replies that came, handle the events that are due, send, report,
// sleep until the next event (no sooner than a tick away).
func (p *RawICMPProber) run(l *icmpLoop, wake, quit <-chan struct{}, done chan<- struct{}) {
	defer close(done)
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		p.mu.Lock()
		conns := p.conns
		p.mu.Unlock()

		replies := l.read(conns, p.id)
		now := time.Now()
		p.mu.Lock()
		for _, key := range replies {
			p.replyLocked(l, key, now)
		}
		p.dueLocked(l, now)
		conns = p.conns           // dueLocked may have opened a family's socket
		next := time.Duration(-1) // no event: sleep until poked
		if len(p.flight) > 0 || len(p.waiting) > 0 {
			next = loopTick // replies are read at the next wake
		}
		if p.queue.Len() > 0 {
			if d := max(time.Duration(p.queue[0].at-p.since(now)), loopTick); next < 0 || d < next {
				next = d
			}
		}
		p.mu.Unlock()

		p.send(l, conns)
		for _, rep := range l.reports {
			rep.m.record(rep.r)
		}
		clear(l.reports)
		l.reports = l.reports[:0]

		if next >= 0 {
			timer.Reset(next)
		} else {
			timer.Stop()
		}
		select {
		case <-quit:
			return
		case <-wake:
		case <-timer.C:
		}
	}
}

// read drains both sockets without waiting and returns the (source, sequence) of every echo
// reply of ours.
func (l *icmpLoop) read(conns [2]*rawConn, id int) []echoKey {
	keys := l.keys[:0]
	for family, c := range conns {
		if c == nil {
			continue
		}
		for {
			n, err := c.batch.ReadBatch(l.in, syscall.MSG_DONTWAIT)
			n = max(n, 0) // -1 with EAGAIN
			for _, m := range l.in[:n] {
				if key, ok := parseEchoReply(family, m.Buffers[0][:m.N], m.Addr, id); ok {
					keys = append(keys, key)
				}
			}
			if err != nil || n < len(l.in) {
				break // drained (EAGAIN), or closed by release
			}
		}
	}
	l.keys = keys
	return keys
}

// replyLocked ends the probe that key answers.
func (p *RawICMPProber) replyLocked(l *icmpLoop, key echoKey, now time.Time) {
	if ch := p.waiting[key]; ch != nil {
		delete(p.waiting, key)
		close(ch)
		return
	}
	s := p.flight[key]
	if s == nil {
		return // late, for a probe that has timed out or a target that is gone
	}
	p.finishLocked(l, s, now, nil)
}

// finishLocked reports s's probe and puts s back on its grid.
func (p *RawICMPProber) finishLocked(l *icmpLoop, s *scheduled, now time.Time, err error) {
	if s.inFlight {
		delete(p.flight, echoKey{s.addr, s.seq})
		s.inFlight = false
	}
	l.reports = append(l.reports, report{s.m, Result{Took: now.Sub(s.sent), Late: max(s.sent.Sub(s.due), 0), Err: err}})
	if !s.phased {
		s.phased = true // the first probe was at once; the grid starts at a random phase
		s.due = s.due.Add(time.Duration(rand.Int64N(int64(s.m.target.Spec.Interval))) - s.m.target.Spec.Interval)
	}
	s.due = nextOnGrid(s.due, s.m.target.Spec.Interval, now)
	s.at = p.since(s.due)
	heap.Fix(&p.queue, s.index)
}

// dueLocked handles every event due by now: a probe to send, a try to repeat, a deadline.
func (p *RawICMPProber) dueLocked(l *icmpLoop, now time.Time) {
	for nowAt := p.since(now); p.queue.Len() > 0 && p.queue[0].at <= nowAt; {
		s := p.queue[0]
		switch {
		case s.inFlight && !now.Before(s.deadline):
			p.finishLocked(l, s, now, fmt.Errorf("icmp: %w", errNoReply{now.Sub(s.sent)}))
		case s.inFlight:
			// The next try: paid from the budget the registry's monitors share, so an
			// overloaded prober does not multiply its own load.
			if s.tries < probeAttempts && s.m.budget.withdraw() {
				p.queueSendLocked(l, s)
				s.tries++
			}
			s.nextTry = s.nextTry.Add(s.m.target.Spec.Timeout / probeAttempts)
			s.at = p.since(s.deadline)
			if s.tries < probeAttempts && s.nextTry.Before(s.deadline) {
				s.at = p.since(s.nextTry)
			}
			heap.Fix(&p.queue, s.index)
		default:
			if _, err := p.connLocked(s.family); err != nil {
				s.sent = now
				p.finishLocked(l, s, now, fmt.Errorf("icmp: %w", err))
				continue
			}
			s.m.budget.deposit()
			s.inFlight = true
			p.seq++
			s.seq = p.seq
			s.sent, s.tries = now, 1
			s.deadline = now.Add(s.m.target.Spec.Timeout)
			s.nextTry = now.Add(s.m.target.Spec.Timeout / probeAttempts)
			s.at = p.since(s.nextTry)
			p.flight[echoKey{s.addr, s.seq}] = s
			p.queueSendLocked(l, s)
			heap.Fix(&p.queue, s.index)
		}
	}
}

func (p *RawICMPProber) queueSendLocked(l *icmpLoop, s *scheduled) {
	setEchoSeq(s.family, s.packet[0], s.seq)
	l.sends[s.family] = append(l.sends[s.family], ipv4.Message{Buffers: s.packet, Addr: s.to})
	l.sentTo[s.family] = append(l.sentTo[s.family], s)
}

// send writes the queued requests, a batch per family. A request the kernel refuses (no route,
// say) ends its probe with that error at once, as a refused connection ends a TCP probe.
func (p *RawICMPProber) send(l *icmpLoop, conns [2]*rawConn) {
	for family, msgs := range l.sends {
		for i := 0; i < len(msgs); {
			n, err := conns[family].batch.WriteBatch(msgs[i:], 0)
			i += max(n, 0)
			if err != nil && i < len(msgs) {
				p.failSend(l, l.sentTo[family][i], err)
				i++
			}
		}
		clear(l.sends[family])
		l.sends[family] = l.sends[family][:0]
		clear(l.sentTo[family])
		l.sentTo[family] = l.sentTo[family][:0]
	}
}

func (p *RawICMPProber) failSend(l *icmpLoop, s *scheduled, err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.targets[s.m] != s || !s.inFlight {
		return // unscheduled meanwhile
	}
	p.finishLocked(l, s, time.Now(), fmt.Errorf("icmp: %w", unwrapDial(context.Background(), err)))
}

func familyOf(addr netip.Addr) int {
	if addr.Is4() {
		return 0
	}
	return 1
}

// echoRequest builds an echo request of ours; setEchoSeq numbers it.
func echoRequest(family, id int, payload []byte) []byte {
	b := make([]byte, 8+len(payload))
	b[0] = byte(ipv4.ICMPTypeEcho)
	if family == 1 {
		b[0] = byte(ipv6.ICMPTypeEchoRequest) // the kernel fills in the ICMPv6 checksum
	}
	binary.BigEndian.PutUint16(b[4:], uint16(id))
	copy(b[8:], payload)
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
func parseEchoReply(family int, b []byte, from net.Addr, id int) (echoKey, bool) {
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
	ip, ok := from.(*net.IPAddr)
	if !ok {
		return echoKey{}, false
	}
	addr, ok := netip.AddrFromSlice(ip.IP)
	if !ok {
		return echoKey{}, false
	}
	return echoKey{addr: addr.Unmap(), seq: binary.BigEndian.Uint16(b[6:])}, true
}

// eventQueue orders scheduled targets by their next event (container/heap).
type eventQueue []*scheduled

func (q eventQueue) Len() int           { return len(q) }
func (q eventQueue) Less(i, j int) bool { return q[i].at < q[j].at }
func (q eventQueue) Swap(i, j int) {
	q[i], q[j] = q[j], q[i]
	q[i].index, q[j].index = i, j
}
func (q *eventQueue) Push(x any) {
	s := x.(*scheduled)
	s.index = len(*q)
	*q = append(*q, s)
}
func (q *eventQueue) Pop() any {
	old := *q
	s := old[len(old)-1]
	old[len(old)-1] = nil
	s.index = -1
	*q = old[:len(old)-1]
	return s
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

// scheduler is a Prober that runs its monitors' probes itself instead of a goroutine per
// monitor. It calls Monitor.record with each result.
type scheduler interface {
	retainer
	schedule(m *Monitor)
	unschedule(m *Monitor)
}
