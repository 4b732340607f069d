package wire

import (
	"context"
	"errors"
	"net"
	"os"
	"time"
)

// unwrapDial strips "dial tcp 10.0.0.7:8080:" from a dial error: the log line already names the
// backend, and the cause ("connection refused", "no answer within 200ms") is what an operator
// reads. within is the probe's timeout, for the latter.
func unwrapDial(ctx context.Context, within time.Duration, err error) error {
	var ne net.Error
	if ctx.Err() != nil || errors.Is(err, os.ErrDeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout()) {
		return errTimeout{within, err}
	}
	var op *net.OpError
	if errors.As(err, &op) && op.Err != nil {
		var sys *os.SyscallError
		if errors.As(op.Err, &sys) {
			return sys.Err
		}
		return op.Err
	}
	return err
}

// errTimeout says a probe ran out of time, and how much it had ("no answer within 200ms"), and
// still matches context.DeadlineExceeded.
type errTimeout struct {
	within time.Duration
	err    error
}

func (e errTimeout) Error() string { return "no answer within " + formatTimeout(e.within) }

func (e errTimeout) Unwrap() error { return e.err }

// errNoReply says an echo request went unanswered for the probe's whole timeout. It matches
// context.DeadlineExceeded, as a TCP dial that timed out does.
type errNoReply struct{ within time.Duration }

func (e errNoReply) Error() string { return "no reply within " + formatTimeout(e.within) }

// errUnfinished says a script ran past the probe's timeout and was killed.
type errUnfinished struct{ within time.Duration }

func (e errUnfinished) Error() string {
	return "did not finish within " + formatTimeout(e.within) + ": killed"
}

func (e errUnfinished) Unwrap() error { return context.DeadlineExceeded }

// formatTimeout writes a timeout as the Corefile does ("200ms"), to the millisecond: the log says
// the configured timeout, not the time left when a try started, which is a little less.
func formatTimeout(d time.Duration) string {
	if d <= 0 {
		return "the timeout"
	}
	return d.Round(time.Millisecond).String()
}

func (e errNoReply) Unwrap() error { return context.DeadlineExceeded }
