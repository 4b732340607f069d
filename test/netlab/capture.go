package netlab

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// Capture records every frame a host sends, on every interface of its namespace, as
// `tcpdump -i any -Q out` would, through an AF_PACKET socket of its own (no tcpdump needed).
type Capture struct {
	host *Host
	fd   int

	stopping atomic.Bool
	done     chan struct{}

	mu     sync.Mutex
	frames []Frame
	err    error
}

// Frame is one frame a host sent: from its link-layer header on (Ethernet, on the lab's veths
// and on lo), with the time the kernel handed it to the interface.
type Frame struct {
	Ifindex int
	At      time.Time
	Data    []byte
}

// CaptureOutgoing starts recording the frames h sends.
func (h *Host) CaptureOutgoing() (*Capture, error) {
	c := &Capture{host: h, fd: -1, done: make(chan struct{})}
	err := h.Do(func() (err error) {
		// ETH_P_ALL in network byte order: every protocol, on every interface of the namespace.
		c.fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_ALL)))
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("capture: %w", err)
	}
	// A timeout on reads, so that Stop is seen within one; the buffer holds a few seconds of a
	// lab's probes should the reader fall behind (drops are counted and reported by Stop).
	// The kernel's time of each frame, not the reader's: a test may ask whether a frame left
	// after a moment it observed, however late this goroutine reads it.
	tv := unix.Timeval{Usec: 100_000}
	if err := errors.Join(
		unix.SetsockoptTimeval(c.fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv),
		unix.SetsockoptInt(c.fd, unix.SOL_SOCKET, unix.SO_RCVBUF, 4<<20),
		unix.SetsockoptInt(c.fd, unix.SOL_SOCKET, unix.SO_TIMESTAMPNS, 1),
	); err != nil {
		unix.Close(c.fd)
		return nil, fmt.Errorf("capture on %s: %w", h.Name, err)
	}
	go c.read()
	return c, nil
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

func (c *Capture) read() {
	defer close(c.done)
	buf, oob := make([]byte, 1<<16), make([]byte, unix.CmsgSpace(16))
	for {
		// Once stopping, what the socket holds is read without waiting, then the reader ends:
		// a frame is queued here as it is sent, so nothing sent before Stop is left behind.
		stopping, flags := c.stopping.Load(), 0
		if stopping {
			flags = unix.MSG_DONTWAIT
		}
		n, oobn, _, from, err := unix.Recvmsg(c.fd, buf, oob, flags)
		switch {
		case errors.Is(err, unix.EAGAIN) && stopping:
			return
		case errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR):
			continue
		case err != nil:
			c.mu.Lock()
			c.err = fmt.Errorf("capture on %s: %w", c.host.Name, err)
			c.mu.Unlock()
			return
		}
		// A sent frame is seen once, as outgoing; on lo it comes back in as well, as a
		// frame received, which is left out.
		ll, ok := from.(*unix.SockaddrLinklayer)
		if !ok || ll.Pkttype != unix.PACKET_OUTGOING {
			continue
		}
		frame := Frame{Ifindex: ll.Ifindex, At: kernelTime(oob[:oobn]), Data: append([]byte(nil), buf[:n]...)}
		c.mu.Lock()
		c.frames = append(c.frames, frame)
		c.mu.Unlock()
	}
}

// Stop ends the capture and returns the frames the host sent since it began. It fails when the
// kernel dropped any, since then the frames are not every frame.
func (c *Capture) Stop() ([]Frame, error) {
	if c.stopping.Swap(true) {
		return nil, errors.New("capture: stopped twice")
	}
	<-c.done
	stats, statsErr := unix.GetsockoptTpacketStats(c.fd, unix.SOL_PACKET, unix.PACKET_STATISTICS)
	unix.Close(c.fd)
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case c.err != nil:
		return c.frames, c.err
	case statsErr != nil:
		return c.frames, fmt.Errorf("capture on %s: reading its drops: %w", c.host.Name, statsErr)
	case stats.Drops > 0:
		return c.frames, fmt.Errorf("capture on %s: the kernel dropped %d of %d frames", c.host.Name, stats.Drops, stats.Packets)
	}
	return c.frames, nil
}

// kernelTime is the SO_TIMESTAMPNS of a frame's control messages; the zero time if none.
func kernelTime(oob []byte) time.Time {
	msgs, _ := unix.ParseSocketControlMessage(oob)
	for _, m := range msgs {
		if m.Header.Level == unix.SOL_SOCKET && m.Header.Type == unix.SCM_TIMESTAMPNS && len(m.Data) >= 16 {
			sec, nsec := binary.NativeEndian.Uint64(m.Data[0:8]), binary.NativeEndian.Uint64(m.Data[8:16])
			return time.Unix(int64(sec), int64(nsec))
		}
	}
	return time.Time{}
}
