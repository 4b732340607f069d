package wire

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"os"
	"syscall"
	"time"
)

// Reasons a probe fails, a small fixed set so that a metric labelled by them stays bounded. The
// error's text says more (the status, the script's first line).
const (
	ReasonRefused     = "refused"     // the port is closed: a reset to the SYN
	ReasonTimeout     = "timeout"     // no answer, or a script that did not finish, within the timeout
	ReasonUnreachable = "unreachable" // no route, or an ICMP unreachable
	ReasonHTTPStatus  = "http_status" // an answer with a status the check does not expect
	ReasonHTTPBody    = "http_body"   // an answer whose body lacks the text, or is not it (body_exact)
	ReasonTLS         = "tls"         // the handshake or the certificate failed
	ReasonExecExit    = "exec_exit"   // the script exited with a status other than 0
	ReasonError       = "error"       // anything else
)

// Reason classifies a probe's failure.
func Reason(err error) string {
	var status StatusError
	var exit exitError
	var unknownCA x509.UnknownAuthorityError
	var hostname x509.HostnameError
	var invalid x509.CertificateInvalidError
	var verify *tls.CertificateVerificationError
	switch {
	case err == nil:
		return ""
	case errors.Is(err, syscall.ECONNREFUSED):
		return ReasonRefused
	case errors.As(err, &status):
		return ReasonHTTPStatus
	case errors.As(err, &bodyError{}), errors.As(err, &bodyMismatch{}):
		return ReasonHTTPBody
	case errors.As(err, &exit):
		return ReasonExecExit
	case errors.As(err, &verify), errors.As(err, &unknownCA), errors.As(err, &hostname), errors.As(err, &invalid), errors.As(err, &tlsError{}):
		return ReasonTLS
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, os.ErrDeadlineExceeded):
		return ReasonTimeout
	case errors.Is(err, syscall.ENETUNREACH), errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.EHOSTDOWN):
		return ReasonUnreachable
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return ReasonTimeout
	}
	return ReasonError
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
