package wire

import (
	"encoding/binary"
	"errors"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/healthdns/healthdns/health/internal/engine"
	"github.com/healthdns/healthdns/health/internal/rawsock"
	"github.com/healthdns/healthdns/health/internal/testnet"
)

// The addresses of the spoofing tests, on a TUN device of the test's namespace that the test
// plays the hosts of (testnet.Wire): nothing else answers them.
var (
	spoofDead    = netip.MustParseAddr("127.0.10.1") // a backend that answers nothing
	spoofHostile = netip.MustParseAddr("127.0.10.2") // a live backend that forges its neighbour's answers
	spoofOther   = netip.MustParseAddr("127.0.10.3") // another host, answering what was sent to the dead one
)

// spoofLab runs t again in a namespace of its own and returns nil; in that namespace it routes
// 127.0.10.0/24 into a TUN device, and returns the device for the test to play its hosts.
func spoofLab(t *testing.T) *os.File {
	t.Helper()
	if !testnet.InOwnNetns() {
		testnet.RunInOwnNetns(t)
		return nil
	}
	return testnet.Wire(t, "hd0", netip.MustParsePrefix("127.0.10.0/24"))
}

// spoofProbes schedules the dead and the hostile backend on a new loop over w, every 100 ms,
// until the hostile one has passed 10 times (so the forger had its chances), then stops the
// forger. It fails the test if the dead one ever passed, or if nothing was forged or sent from
// the other host (the test would prove nothing); else it returns the dead one's last failure.
func spoofProbes[S any](t *testing.T, w engine.Wire[S], port uint16, stopForger func(), forged, fromOther *atomic.Int64) error {
	t.Helper()
	l := engine.New[S](w)
	l.Retain()
	defer l.Release()
	budget := engine.NewBudget()
	var mu sync.Mutex
	// The results are written by the loop's goroutines, which run until the deferred
	// Unschedules: everything they touch is read under mu and copied out before returning.
	var deadPasses, hostilePasses int
	var deadErr, hostileErr error
	report := func(dead bool) func(engine.Result) {
		return func(r engine.Result) {
			mu.Lock()
			defer mu.Unlock()
			switch {
			case dead && r.Err == nil:
				deadPasses++
			case dead:
				deadErr = r.Err
			case r.Err == nil:
				hostilePasses++
			default:
				hostileErr = r.Err
			}
		}
	}
	for _, addr := range []netip.Addr{spoofDead, spoofHostile} {
		tk := l.Schedule(engine.Target{
			Addr: addr, Port: port, Interval: 100 * time.Millisecond, Timeout: 90 * time.Millisecond,
			Budget: budget, Report: report(addr == spoofDead),
		})
		defer tk.Unschedule()
	}
	deadline := time.Now().Add(time.Minute)
	for {
		mu.Lock()
		done, dp, he := hostilePasses >= 10, deadPasses, hostileErr
		mu.Unlock()
		if done {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the hostile backend passed %d times in a minute (last failure: %v); the dead one %d times", hostilePasses, he, dp)
		}
		time.Sleep(10 * time.Millisecond)
	}
	mu.Lock()
	passes, err := deadPasses, deadErr
	mu.Unlock()
	stopForger()
	t.Logf("%d forged from %s, %d sent from %s for its probes", forged.Load(), spoofDead, fromOther.Load(), spoofOther)
	if forged.Load() == 0 || fromOther.Load() == 0 {
		t.Fatal("nothing was forged: the test proves nothing")
	}
	if passes > 0 {
		t.Fatalf("the dead backend passed %d times on forged answers", passes)
	}
	return err
}

// A hostile backend sees its own echo requests: our identifier and, as every probe of the loop
// takes the next one, sequence numbers close to those of its neighbours'. Forging echo replies
// from a dead neighbour's address with them, and copying its own requests' payload, must not
// bring the neighbour up; nor may another host that answers the dead one's requests from its own
// address, nor a reply from the dead one's address that is exact but for its identifier. The
// hostile backend answers each of its own requests three times: duplicates are harmless.
func TestEchoIgnoresSpoofedReplies(t *testing.T) {
	tun := spoofLab(t)
	if tun == nil {
		return
	}
	needRawICMP(t)
	var forged, fromOther atomic.Int64
	var last atomic.Pointer[[]byte] // the hostile backend's latest request, ICMP header on
	stop := playHosts(t, tun, func(src, dst netip.Addr, proto byte, msg []byte) {
		if proto != unix.IPPROTO_ICMP || len(msg) < 8 || msg[0] != 8 {
			return
		}
		switch dst {
		case spoofHostile:
			for range 3 {
				writeIPv4(t, tun, spoofHostile, src, unix.IPPROTO_ICMP, echoReplyOf(msg, binary.BigEndian.Uint16(msg[6:])))
			}
			req := append([]byte(nil), msg...)
			last.Store(&req)
		case spoofDead:
			writeIPv4(t, tun, spoofOther, src, unix.IPPROTO_ICMP, echoReplyOf(msg, binary.BigEndian.Uint16(msg[6:])))
			otherID := append([]byte(nil), msg...)
			binary.BigEndian.PutUint16(otherID[4:], binary.BigEndian.Uint16(msg[4:])+1)
			writeIPv4(t, tun, spoofDead, src, unix.IPPROTO_ICMP, echoReplyOf(otherID, binary.BigEndian.Uint16(msg[6:])))
			fromOther.Add(1)
		}
	}, func(send func(src netip.Addr, proto byte, msg []byte)) {
		req := last.Load()
		if req == nil {
			return
		}
		seq := binary.BigEndian.Uint16((*req)[6:])
		for d := -4; d <= 4; d++ {
			send(spoofDead, unix.IPPROTO_ICMP, echoReplyOf(*req, seq+uint16(d)))
			forged.Add(1)
		}
	})
	err := spoofProbes[EchoState](t, NewEcho(), 0, stop, &forged, &fromOther)
	var noReply errNoReply
	if !errors.As(err, &noReply) {
		t.Errorf("the dead backend failed with %v, want no reply", err)
	}
}

// A SYN-ACK for the dead backend's SYN, right port and acknowledgment, but from another address,
// must not bring it up; nor SYN-ACKs forged from its address by a hostile backend that knows only
// its own SYNs.
func TestHalfOpenIgnoresSpoofedSYNACKs(t *testing.T) {
	tun := spoofLab(t)
	if tun == nil {
		return
	}
	needRawICMP(t)
	const port = 80
	var forged, fromOther atomic.Int64
	var last atomic.Pointer[[]byte] // the hostile backend's latest SYN
	stop := playHosts(t, tun, func(src, dst netip.Addr, proto byte, seg []byte) {
		if proto != unix.IPPROTO_TCP || len(seg) < 20 || seg[13] != tcpSYN {
			return
		}
		switch dst {
		case spoofHostile:
			writeIPv4(t, tun, spoofHostile, src, unix.IPPROTO_TCP, synACKOf(seg, spoofHostile, src, 0))
			syn := append([]byte(nil), seg...)
			last.Store(&syn)
		case spoofDead:
			writeIPv4(t, tun, spoofOther, src, unix.IPPROTO_TCP, synACKOf(seg, spoofOther, src, 0))
			fromOther.Add(1)
		}
	}, func(send func(src netip.Addr, proto byte, msg []byte)) {
		syn := last.Load()
		if syn == nil {
			return
		}
		for d := -4; d <= 4; d++ { // its own sequence numbers, from the dead one's address
			send(spoofDead, unix.IPPROTO_TCP, synACKOf(*syn, spoofDead, testnet.Loopback4, uint32(d)))
			forged.Add(1)
		}
	})
	err := spoofProbes[HalfOpenState](t, NewHalfOpen(), port, stop, &forged, &fromOther)
	if Reason(err) != ReasonTimeout {
		t.Errorf("the dead backend failed with %v, want a timeout", err)
	}
}

// playHosts reads what the host sends into tun and hands each IPv4 packet to answer; every 5 ms
// it calls forge, whose sends go to 127.0.0.1 from the address given. It returns a stop that
// waits for both to end, which the test's end calls too.
func playHosts(t *testing.T, tun *os.File, answer func(src, dst netip.Addr, proto byte, payload []byte), forge func(send func(src netip.Addr, proto byte, msg []byte))) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		buf := make([]byte, 65536)
		for {
			tun.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
			n, err := tun.Read(buf)
			select {
			case <-done:
				return
			default:
			}
			if err != nil {
				continue
			}
			p := buf[:n]
			if n < 20 || p[0]>>4 != 4 {
				continue
			}
			hl := int(p[0]&0x0f) * 4
			if hl < 20 || n < hl {
				continue
			}
			src, _ := netip.AddrFromSlice(p[12:16])
			dst, _ := netip.AddrFromSlice(p[16:20])
			answer(src, dst, p[9], p[hl:])
		}
	}()
	go func() {
		defer wg.Done()
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-tick.C:
			}
			forge(func(src netip.Addr, proto byte, msg []byte) {
				writeIPv4(t, tun, src, testnet.Loopback4, proto, msg)
			})
		}
	}()
	stop = sync.OnceFunc(func() { close(done); wg.Wait() })
	t.Cleanup(stop)
	return stop
}

// writeIPv4 writes a packet from src to dst into tun: the host receives it as sent by src.
func writeIPv4(t *testing.T, tun *os.File, src, dst netip.Addr, proto byte, payload []byte) {
	p := make([]byte, 20+len(payload))
	p[0] = 0x45
	binary.BigEndian.PutUint16(p[2:], uint16(len(p)))
	p[8], p[9] = 64, proto
	s, d := src.As4(), dst.As4()
	copy(p[12:], s[:])
	copy(p[16:], d[:])
	binary.BigEndian.PutUint16(p[10:], rawsock.Checksum(p[:20]))
	copy(p[20:], payload)
	if _, err := tun.Write(p); err != nil {
		t.Errorf("writing to the TUN device: %v", err)
	}
}

// echoReplyOf is the echo reply to request, its sequence number replaced by seq.
func echoReplyOf(request []byte, seq uint16) []byte {
	r := append([]byte(nil), request...)
	r[0], r[2], r[3] = 0, 0, 0
	binary.BigEndian.PutUint16(r[6:], seq)
	binary.BigEndian.PutUint16(r[2:], rawsock.Checksum(r))
	return r
}

// synACKOf is a SYN-ACK from src to dst for the SYN syn, acknowledging its sequence number plus
// 1 and off.
func synACKOf(syn []byte, src, dst netip.Addr, off uint32) []byte {
	s := make([]byte, 20)
	copy(s[0:2], syn[2:4]) // from the port the SYN went to
	copy(s[2:4], syn[0:2]) // to the port it came from
	binary.BigEndian.PutUint32(s[4:], 0x5eed)
	binary.BigEndian.PutUint32(s[8:], binary.BigEndian.Uint32(syn[4:])+1+off)
	s[12], s[13] = 5<<4, tcpSYN|tcpACK
	binary.BigEndian.PutUint16(s[14:], 65535)
	a, b := src.As4(), dst.As4()
	pseudo := append(append(append([]byte(nil), a[:]...), b[:]...), 0, unix.IPPROTO_TCP, 0, 20)
	binary.BigEndian.PutUint16(s[16:], rawsock.Checksum(append(pseudo, s...)))
	return s
}

// pro-bing's checks (datagram ping sockets, and raw ones where the echo wire does not serve)
// match a reply by identifier and by the tracker in its payload, not by who sent it: a host that
// answers the dead backend's echo requests from its own address must not bring it up.
func TestPingIgnoresRepliesFromAnotherHost(t *testing.T) {
	tun := spoofLab(t)
	if tun == nil {
		return
	}
	testnet.Sysctl(t, "net.ipv4.ping_group_range", "0 2147483647")
	var fromOther atomic.Int64
	stop := playHosts(t, tun, func(src, dst netip.Addr, proto byte, msg []byte) {
		if proto == unix.IPPROTO_ICMP && len(msg) >= 8 && msg[0] == 8 && dst == spoofDead {
			writeIPv4(t, tun, spoofOther, src, unix.IPPROTO_ICMP, echoReplyOf(msg, binary.BigEndian.Uint16(msg[6:])))
			fromOther.Add(1)
		}
	}, func(func(netip.Addr, byte, []byte)) {})
	defer stop()
	for _, privileged := range []bool{false, true} {
		before := fromOther.Load()
		err := probeWithin(Ping(privileged), spoofDead, 500*time.Millisecond)
		if fromOther.Load() == before {
			t.Fatalf("privileged %v: no request reached the other host: the test proves nothing", privileged)
		}
		if want := "icmp: the echo reply came from 127.0.10.3, not from the backend"; err == nil || err.Error() != want {
			t.Errorf("privileged %v: the dead backend's ping, answered by %s: %v, want %s", privileged, spoofOther, err, want)
		}
	}
}
