package health

import (
	"context"
	"errors"
	"fmt"
	"time"

	"golang.org/x/sys/unix"
)

// tcpConnector probes TCP checks from its probeLoop: each try is a non-blocking connect, and
// one epoll set, polled at every wake, says which have been accepted or refused. It replaces a
// goroutine, a timer, a context and a net.Dialer per probe, which at 10,000 targets a second
// took most of a core and fell behind its own schedule (bench/RESULTS.md).
//
// A connection that was accepted is closed at once with a reset (SO_LINGER 0), as HAProxy
// closes its connect-only checks: the check sends nothing, so nothing is lost, and the prober
// keeps no TIME_WAIT per probe (10,000 targets at 1s would otherwise hold 600,000 of them).
type tcpConnector struct {
	probeLoop

	// Guarded by probeLoop.mu.
	epfd   int                  // -1 while closed
	flight map[int32]*scheduled // by socket: the tries in flight

	// The loop goroutine's, reused at every wake.
	events  []unix.EpollEvent
	ready   []unix.EpollEvent
	answers []answer
}

// tcpTarget is what a tcpConnector keeps of a scheduled target.
type tcpTarget struct {
	to    unix.Sockaddr
	socks []int // one per try of the probe in flight
}

const pollBatch = 256

func newTCPConnector() *tcpConnector {
	c := &tcpConnector{epfd: -1, flight: map[int32]*scheduled{}, events: make([]unix.EpollEvent, pollBatch)}
	c.init(c)
	return c
}

// prepare builds the target's socket address. It has no zone: setup refuses scoped addresses.
func (c *tcpConnector) prepare(s *scheduled) {
	port := int(s.m.target.Spec.Check.Port)
	if s.addr.Is4() {
		s.tcp.to = &unix.SockaddrInet4{Port: port, Addr: s.addr.As4()}
	} else {
		s.tcp.to = &unix.SockaddrInet6{Port: port, Addr: s.addr.As16()}
	}
}

// tcpFailure names the check in err, as a failed dial reads: "tcp :8080: connection refused".
// Both TCP loops' errors read so, whichever probes.
func tcpFailure(s *scheduled, err error) error {
	return fmt.Errorf("%s: %w", s.m.target.Spec.Check, err)
}

func (c *tcpConnector) try(s *scheduled, first bool) error {
	if c.epfd < 0 {
		fd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
		if err != nil {
			return tcpFailure(s, fmt.Errorf("epoll: %w", err))
		}
		c.epfd = fd
	}
	domain := unix.AF_INET
	if !s.addr.Is4() {
		domain = unix.AF_INET6
	}
	fd, err := unix.Socket(domain, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return tcpFailure(s, err)
	}
	err = unix.SetsockoptLinger(fd, unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1, Linger: 0})
	if err == nil {
		err = unix.Connect(fd, s.tcp.to)
		if errors.Is(err, unix.EINPROGRESS) {
			err = nil
		}
	}
	if err == nil {
		// One-shot: a connected socket stays writable, and poll drains until epoll has nothing new.
		err = unix.EpollCtl(c.epfd, unix.EPOLL_CTL_ADD, fd, &unix.EpollEvent{Events: unix.EPOLLOUT | unix.EPOLLONESHOT, Fd: int32(fd)})
	}
	if err != nil {
		unix.Close(fd)
		return tcpFailure(s, err) // no route, no port to connect from, ...: an answer of sorts
	}
	s.tcp.socks = append(s.tcp.socks, fd)
	c.flight[int32(fd)] = s
	return nil
}

// end closes the probe's sockets; closing takes them out of the epoll set, so an event that
// poll took in for one of them is not matched (answered looks the socket up first).
func (c *tcpConnector) end(s *scheduled) {
	for _, fd := range s.tcp.socks {
		delete(c.flight, int32(fd))
		unix.Close(fd)
	}
	s.tcp.socks = s.tcp.socks[:0]
}

func (c *tcpConnector) busy() bool { return false }

func (c *tcpConnector) timedOut(s *scheduled, took time.Duration) error {
	return tcpFailure(s, errTimeout{s.timeout, context.DeadlineExceeded})
}

// close closes the epoll set. No socket is left: the last release comes after every monitor
// was unscheduled, which ended its probe.
func (c *tcpConnector) close() {
	if c.epfd >= 0 {
		unix.Close(c.epfd)
		c.epfd = -1
	}
}

// poll takes in the sockets whose connects have ended, without waiting. Only the loop's
// goroutine opens the epoll set (in try) and it is closed only after the loop returns, so it
// is read here without the lock.
func (c *tcpConnector) poll() {
	c.ready = c.ready[:0]
	if c.epfd < 0 {
		return
	}
	for {
		n, err := unix.EpollWait(c.epfd, c.events, 0)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		n = max(n, 0)
		c.ready = append(c.ready, c.events[:n]...)
		if err != nil || n < len(c.events) {
			return
		}
	}
}

// answered reads each ended connect's outcome: accepted, or refused (or unreachable) before
// the deadline, which is as final as an answer.
func (c *tcpConnector) answered() []answer {
	answers := c.answers[:0]
	for _, ev := range c.ready {
		s := c.flight[ev.Fd]
		if s == nil {
			continue // its probe ended since poll
		}
		var err error
		errno, gerr := unix.GetsockoptInt(int(ev.Fd), unix.SOL_SOCKET, unix.SO_ERROR)
		switch {
		case gerr != nil:
			err = tcpFailure(s, gerr)
		case errno != 0:
			err = tcpFailure(s, unix.Errno(errno))
		}
		answers = append(answers, answer{s, err})
	}
	c.answers = answers
	return answers
}

func (c *tcpConnector) flush() []answer { return nil }

// scheduledTCPProber is a TCP check whose monitors the registry's TCP loop probes. Probe, a
// one-off check outside any monitor, still dials.
type scheduledTCPProber struct {
	TCPProber
	loop scheduler // a *halfOpenProber, or a *tcpConnector without CAP_NET_RAW
}

func (p *scheduledTCPProber) retain()               { p.loop.retain() }
func (p *scheduledTCPProber) release()              { p.loop.release() }
func (p *scheduledTCPProber) schedule(m *Monitor)   { p.loop.schedule(m) }
func (p *scheduledTCPProber) unschedule(m *Monitor) { p.loop.unschedule(m) }

// tcpProberLocked returns the prober of a TCP check on port: every one of the registry's
// shares one loop, whatever its port, so one loop probes every TCP target of the process. It
// sends SYNs from a raw socket where the process may (halfOpenProber), and connects otherwise.
func (r *Registry) tcpProberLocked(port uint16) Prober {
	if r.tcp == nil {
		if !r.connectOnly && rawTCPAllowed() {
			r.tcp = newHalfOpenProber()
		} else {
			r.tcp = newTCPConnector()
		}
	}
	return &scheduledTCPProber{TCPProber: TCPProber{Port: port}, loop: r.tcp}
}
