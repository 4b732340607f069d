package health

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"time"
)

// timeoutKey is the context key of the probe's configured timeout.
type timeoutKey struct{}

// withProbeTimeout records the probe's configured timeout in ctx, for the error text of a probe
// that runs out of it: the time left before the deadline is less by the time it took to start
// (and a retry's less by the gap), so a log line would show 199ms for a 200ms timeout.
func withProbeTimeout(ctx context.Context, timeout time.Duration) context.Context {
	return context.WithValue(ctx, timeoutKey{}, timeout)
}

// probeTimeout returns the timeout withProbeTimeout recorded, or, for a probe called without a
// monitor, the time left before ctx's deadline; probers read it when they start.
func probeTimeout(ctx context.Context) time.Duration {
	if d, ok := ctx.Value(timeoutKey{}).(time.Duration); ok {
		return d
	}
	if deadline, ok := ctx.Deadline(); ok {
		return time.Until(deadline)
	}
	return 0
}

// formatTimeout writes a timeout as the Corefile does ("200ms"), to the millisecond.
func formatTimeout(d time.Duration) string {
	if d <= 0 {
		return "the timeout"
	}
	return d.Round(time.Millisecond).String()
}

// TCPProber passes when a TCP connection to the port is accepted; it sends nothing.
type TCPProber struct {
	Port   uint16
	dialer net.Dialer
}

// Probe implements Prober.
func (p *TCPProber) Probe(ctx context.Context, addr netip.Addr) error {
	within := probeTimeout(ctx)
	conn, err := p.dialer.DialContext(ctx, "tcp", netip.AddrPortFrom(addr, p.Port).String())
	if err != nil {
		return fmt.Errorf("tcp :%d: %w", p.Port, unwrapDial(ctx, within, err))
	}
	conn.Close()
	return nil
}

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
