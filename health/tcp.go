package health

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
)

// TCPProber passes when a TCP connection to the port is accepted; it sends nothing.
type TCPProber struct {
	Port   uint16
	dialer net.Dialer
}

// Probe implements Prober.
func (p *TCPProber) Probe(ctx context.Context, addr netip.Addr) error {
	conn, err := p.dialer.DialContext(ctx, "tcp", netip.AddrPortFrom(addr, p.Port).String())
	if err != nil {
		return fmt.Errorf("tcp :%d: %w", p.Port, unwrapDial(ctx, err))
	}
	conn.Close()
	return nil
}

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
