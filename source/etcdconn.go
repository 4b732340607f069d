package source

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
)

// connectionTrouble keeps gRPC's last word on why a request found no connection to etcd. The
// client reports a request that timed out waiting for one as a bare "context deadline
// exceeded", and an operator needs the cause: a TLS handshake that either side refused, a
// connection refused.
type connectionTrouble struct {
	mu    sync.Mutex
	cause string
}

// connectionTroubleKey carries a request's *connectionTrouble in its context, for
// noteConnectionTrouble to fill.
type connectionTroubleKey struct{}

// noteConnectionTrouble is a unary interceptor that records, in the request's
// connectionTrouble if it has one, the connection error gRPC gave for a request that found no
// connection. It runs outside the client's retries, and sees gRPC's error before the client
// replaces it with its context's.
func noteConnectionTrouble(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	err := invoker(ctx, method, req, reply, cc, opts...)
	trouble, ok := ctx.Value(connectionTroubleKey{}).(*connectionTrouble)
	if err == nil || !ok {
		return err
	}
	if s, ok := status.FromError(err); ok && (s.Code() == codes.DeadlineExceeded || s.Code() == codes.Unavailable) {
		if cause, found := strings.CutPrefix(s.Message(), "latest balancer error: "); found {
			// gRPC's transport says `connection error: desc = "..."`; the quoted part is the cause.
			if desc, found := strings.CutPrefix(cause, "connection error: desc = "); found {
				if unquoted, err := strconv.Unquote(desc); err == nil {
					cause = unquoted
				}
			}
			trouble.mu.Lock()
			trouble.cause = cause
			trouble.mu.Unlock()
		}
	}
	return err
}

// explain adds the cause of a request's timeout, when it timed out for want of a connection.
func (t *connectionTrouble) explain(err error) error {
	t.mu.Lock()
	cause := t.cause
	t.mu.Unlock()
	if cause == "" || !errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	// A TLS alert from etcd reads as a connection that failed while reading; it is etcd
	// refusing the client's certificate (or the handshake).
	if strings.Contains(cause, "remote error: tls: ") {
		cause = "etcd refused the TLS handshake: " + cause
	}
	var why error = errors.New(cause)
	if strings.Contains(cause, "tls: ") || strings.Contains(cause, "authentication handshake failed") || strings.Contains(cause, closedAfterHandshake) {
		why = &TLSError{cause}
	}
	return fmt.Errorf("no connection within %s: %w (%w)", requestTimeout, why, err)
}

// TLSError is a connection to etcd that failed in its TLS handshake: a certificate that one side
// does not accept, or TLS on one side only. Unlike an outage, it does not mend by itself.
type TLSError struct{ cause string }

func (e *TLSError) Error() string { return e.cause }

// refusalAwareTLS is the client's TLS, with connections that say so when etcd closes them right
// after the handshake.
//
// Under TLS 1.3 the client's handshake is over before etcd has checked the client's
// certificate; etcd refuses one it does not trust with an alert and closes the connection on
// the preface gRPC already sent, which resets it. Whether gRPC then reads the alert ("remote
// error: tls: bad certificate") or fails a write ("broken pipe") is a race; the second would
// tell an operator nothing.
type refusalAwareTLS struct {
	credentials.TransportCredentials
}

func (c refusalAwareTLS) ClientHandshake(ctx context.Context, authority string, raw net.Conn) (net.Conn, credentials.AuthInfo, error) {
	conn, info, err := c.TransportCredentials.ClientHandshake(ctx, authority, raw)
	if err != nil {
		return nil, nil, err
	}
	return &refusalAwareConn{Conn: conn}, info, nil
}

func (c refusalAwareTLS) Clone() credentials.TransportCredentials {
	return refusalAwareTLS{c.TransportCredentials.Clone()}
}

// refusalAwareConn is a TLS connection that explains a reset before etcd sent any data.
type refusalAwareConn struct {
	net.Conn
	heard atomic.Bool // etcd has sent data: it took the client
}

func (c *refusalAwareConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if n > 0 {
		c.heard.Store(true)
	}
	return n, c.explain(err)
}

func (c *refusalAwareConn) Write(b []byte) (int, error) {
	n, err := c.Conn.Write(b)
	return n, c.explain(err)
}

func (c *refusalAwareConn) explain(err error) error {
	if err == nil || c.heard.Load() || !(errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNRESET)) {
		return err
	}
	return fmt.Errorf("%s: %w", closedAfterHandshake, err)
}

// closedAfterHandshake is what refusalAwareConn says; a connection error that holds it is a
// TLS problem.
const closedAfterHandshake = "etcd refused the TLS handshake (it closed the connection right after it, as it does for a client certificate it does not trust)"

// Refusal says what the operator must fix when etcd is there but does not let the server
// in: its TLS handshake fails, or etcd refuses its credentials; "" for any other error. Waiting
// for etcd to return would be the wrong advice then.
func Refusal(err error) string {
	var tlsErr *TLSError
	switch {
	case errors.As(err, &tlsErr):
		return "the TLS handshake with etcd fails (see 'tls' and etcd's certificates)"
	case errors.Is(err, rpctypes.ErrAuthFailed):
		return "etcd refuses the user and password of 'credentials'"
	case errors.Is(err, rpctypes.ErrUserEmpty):
		return "etcd has authentication on and wants 'credentials USER PASSWORD'"
	case errors.Is(err, rpctypes.ErrPermissionDenied):
		return "etcd denies the user of 'credentials' a read of the prefix"
	case errors.Is(err, ErrResponseTooLarge):
		return "the prefix's values are too large to read (delete the values over 4 KiB)"
	}
	return ""
}
