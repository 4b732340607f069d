package wire

import (
	"context"
	"errors"
	"net"
	"os"
	"time"
)

// unwrapDial strips "dial tcp 10.0.0.7:8080:" from a dial error: the log line already names the
// backend, and the cause ("connection refused", "timeout") is what an operator reads.
func unwrapDial(ctx context.Context, err error) error {
	var ne net.Error
	if ctx.Err() != nil || errors.Is(err, os.ErrDeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout()) {
		return errTimeout{err}
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

// errTimeout says a probe ran out of time, and still matches context.DeadlineExceeded.
type errTimeout struct{ err error }

func (e errTimeout) Error() string { return "no answer within the timeout" }

func (e errTimeout) Unwrap() error { return e.err }

// errNoReply says a request went unanswered for the probe's whole timeout. It matches
// context.DeadlineExceeded, as a TCP dial that timed out does.
type errNoReply struct{ within time.Duration }

func (e errNoReply) Error() string {
	return "no reply within " + e.within.Round(time.Millisecond).String()
}

func (e errNoReply) Unwrap() error { return context.DeadlineExceeded }
