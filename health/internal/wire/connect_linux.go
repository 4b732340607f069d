package wire

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/healthdns/healthdns/health/internal/engine"
)

// Connect probes TCP checks: each try is a non-blocking connect, and one epoll set, polled at
// every wake of its loop, says which have been accepted or refused. It replaces a
// goroutine, a timer, a context and a net.Dialer per probe, which at 10,000 targets a second
// took most of a core and fell behind its own schedule (bench/RESULTS.md).
//
// A connection that was accepted is closed at once with a reset (SO_LINGER 0), as HAProxy
// closes its connect-only checks: the check sends nothing, so nothing is lost, and the prober
// keeps no TIME_WAIT per probe (10,000 targets at 1s would otherwise hold 600,000 of them).
type Connect struct {
	// Guarded by the loop's mutex.
	flight map[int32]*engine.Slot[ConnectState] // by socket: the tries in flight

	epMu sync.Mutex // guards epfd, which Try opens and Poll reads
	epfd int        // -1 while closed

	// The loop goroutine's, reused at every wake.
	events  []unix.EpollEvent
	ready   []unix.EpollEvent
	answers []engine.Answer[ConnectState]
}

// ConnectState is what Connect keeps of a scheduled target.
type ConnectState struct {
	to    unix.Sockaddr
	port  uint16
	socks []int // one per try of the probe in flight
}

const pollBatch = 256

// NewConnect returns a connect wire.
func NewConnect() *Connect {
	return &Connect{epfd: -1, flight: map[int32]*engine.Slot[ConnectState]{}, events: make([]unix.EpollEvent, pollBatch)}
}

// Prepare implements engine.Wire: it builds the target's socket address. It has no zone: setup
// refuses scoped addresses.
func (c *Connect) Prepare(s *engine.Slot[ConnectState], t *engine.Target) {
	s.State.port = t.Port
	if s.Addr.Is4() {
		s.State.to = &unix.SockaddrInet4{Port: int(t.Port), Addr: s.Addr.As4()}
	} else {
		s.State.to = &unix.SockaddrInet6{Port: int(t.Port), Addr: s.Addr.As16()}
	}
}

// tcpFailure names the check in err, as a failed dial reads: "tcp :8080: connection refused".
// Every TCP wire's errors read so, whichever probes.
func tcpFailure(port uint16, err error) error {
	return fmt.Errorf("tcp :%d: %w", port, err)
}

func (c *Connect) epoll() (int, error) {
	c.epMu.Lock()
	defer c.epMu.Unlock()
	if c.epfd < 0 {
		fd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
		if err != nil {
			return -1, fmt.Errorf("epoll: %w", err)
		}
		c.epfd = fd
	}
	return c.epfd, nil
}

// Try implements engine.Wire.
func (c *Connect) Try(s *engine.Slot[ConnectState], first bool) error {
	epfd, err := c.epoll()
	if err != nil {
		return tcpFailure(s.State.port, err)
	}
	domain := unix.AF_INET
	if !s.Addr.Is4() {
		domain = unix.AF_INET6
	}
	fd, err := unix.Socket(domain, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return tcpFailure(s.State.port, err)
	}
	err = unix.SetsockoptLinger(fd, unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1, Linger: 0})
	if err == nil {
		err = unix.Connect(fd, s.State.to)
		if errors.Is(err, unix.EINPROGRESS) {
			err = nil
		}
	}
	if err == nil {
		// One-shot: a connected socket stays writable, and poll drains until epoll has nothing new.
		err = unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, fd, &unix.EpollEvent{Events: unix.EPOLLOUT | unix.EPOLLONESHOT, Fd: int32(fd)})
	}
	if err != nil {
		unix.Close(fd)
		return tcpFailure(s.State.port, err) // no route, no port to connect from, ...: an answer of sorts
	}
	s.State.socks = append(s.State.socks, fd)
	c.flight[int32(fd)] = s
	return nil
}

// End implements engine.Wire: it closes the probe's sockets; closing takes them out of the epoll
// set, so an event that Poll took in for one of them is not matched (Answered looks the socket
// up first).
func (c *Connect) End(s *engine.Slot[ConnectState]) {
	for _, fd := range s.State.socks {
		delete(c.flight, int32(fd))
		unix.Close(fd)
	}
	s.State.socks = s.State.socks[:0]
}

// TimedOut implements engine.Wire.
func (c *Connect) TimedOut(s *engine.Slot[ConnectState], took time.Duration) error {
	return tcpFailure(s.State.port, errTimeout{s.Timeout(), context.DeadlineExceeded})
}

// Close implements engine.Wire: it closes the epoll set. No socket is left: the last release
// comes after every target was unscheduled, which ended its probe.
func (c *Connect) Close() {
	c.epMu.Lock()
	defer c.epMu.Unlock()
	if c.epfd >= 0 {
		unix.Close(c.epfd)
		c.epfd = -1
	}
}

// Poll implements engine.Wire: it takes in the sockets whose connects have ended, without
// waiting.
func (c *Connect) Poll() {
	c.ready = c.ready[:0]
	c.epMu.Lock()
	epfd := c.epfd
	c.epMu.Unlock()
	if epfd < 0 {
		return
	}
	for {
		n, err := unix.EpollWait(epfd, c.events, 0)
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

// Answered implements engine.Wire: it reads each ended connect's outcome: accepted, or refused
// (or unreachable) before the deadline, which is as final as an answer.
func (c *Connect) Answered() []engine.Answer[ConnectState] {
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
			err = tcpFailure(s.State.port, gerr)
		case errno != 0:
			err = tcpFailure(s.State.port, unix.Errno(errno))
		}
		answers = append(answers, engine.Answer[ConnectState]{Slot: s, Err: err})
	}
	c.answers = answers
	return answers
}

// Flush implements engine.Wire: each try was sent by its connect.
func (c *Connect) Flush() []engine.Answer[ConnectState] { return nil }
