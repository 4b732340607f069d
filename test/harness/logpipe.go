package harness

import (
	"bytes"
	"errors"
	"os"
	"sync"

	"golang.org/x/sys/unix"
)

// logPipe is coredns's stdout and stderr. A goroutine drains it as coredns writes, and String
// drains it too before it answers, so everything coredns wrote before String was called is in
// what it returns. With a plain io.Writer (exec's own copying goroutine) a log line written just
// before coredns answered a query or an HTTP request could still be in the pipe when the test,
// having seen the answer, looked for the line.
type logPipe struct {
	fd   int       // the read end, non-blocking
	w    *os.File  // the write end, blocking, for the child; closed here once the child has it
	done chan bool // closed when the writers are gone and everything is read

	mu  sync.Mutex
	buf bytes.Buffer
	eof bool
}

func newLogPipe() (*logPipe, error) {
	var fds [2]int
	if err := unix.Pipe2(fds[:], unix.O_CLOEXEC); err != nil {
		return nil, err
	}
	// Only the read end: O_NONBLOCK on the write end would make coredns's writes fail when the
	// pipe is full instead of waiting.
	if err := unix.SetNonblock(fds[0], true); err != nil {
		unix.Close(fds[0])
		unix.Close(fds[1])
		return nil, err
	}
	return &logPipe{fd: fds[0], w: os.NewFile(uintptr(fds[1]), "coredns-output"), done: make(chan bool)}, nil
}

// started closes the parent's copy of the write end, once the child holds its own, and starts
// draining.
func (l *logPipe) started() {
	l.w.Close()
	go l.follow()
}

func (l *logPipe) follow() {
	defer close(l.done)
	for {
		fds := []unix.PollFd{{Fd: int32(l.fd), Events: unix.POLLIN}}
		if _, err := unix.Poll(fds, -1); err != nil && !errors.Is(err, unix.EINTR) {
			return
		}
		l.mu.Lock()
		l.drainLocked()
		eof := l.eof
		l.mu.Unlock()
		if eof {
			return
		}
	}
}

// drainLocked reads what the pipe holds now. Callers hold mu.
func (l *logPipe) drainLocked() {
	var chunk [64 << 10]byte
	for !l.eof {
		n, err := unix.Read(l.fd, chunk[:])
		switch {
		case n > 0:
			l.buf.Write(chunk[:n])
		case err == nil, err != nil && !errors.Is(err, unix.EINTR) && !errors.Is(err, unix.EAGAIN):
			l.eof = true // n == 0: every writer is gone
			unix.Close(l.fd)
		case errors.Is(err, unix.EAGAIN):
			return
		}
	}
}

// String returns everything written so far.
func (l *logPipe) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.drainLocked()
	return l.buf.String()
}
