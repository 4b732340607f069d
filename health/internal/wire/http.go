package wire

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// MaxBodyRead is how much of a response body an HTTP check reads to find its text: enough for a
// health page, and a bound on what a backend can make the prober read.
const MaxBodyRead = 64 << 10

// MaxHeaderRead bounds a response's status line and header. http.ReadResponse has no bound of
// its own (the Transport's MaxResponseHeaderBytes is not its), and an endless header line is
// read into one buffer for as long as the timeout lets it come: on loopback, hundreds of MB.
const MaxHeaderRead = 64 << 10

// HTTPSpec is an HTTP or HTTPS check, as the Corefile gives it.
type HTTPSpec struct {
	Port   uint16
	Path   string      // "/" when empty
	Host   string      // the Host header, SNI and verified name; the backend's address when empty
	Expect StatusCodes // the statuses that pass; 200-399 when empty
	Body   string      // text the first MaxBodyRead bytes of the body must hold; "" for any body
	TLS    *tls.Config // nil for plain HTTP; its ServerName is set per backend
	// BodyExact wants the whole body to be Body, but for white space around it (a health
	// page's final newline): "not ok" holds "ok", but is not it.
	BodyExact bool
}

// HTTP returns a blocking check that sends one GET over a fresh connection and passes when the
// status is expected and the body holds the text. Redirects are not followed: a 3xx is a status
// like any other. The connection is closed with a reset as soon as the answer is read, as
// HAProxy closes its checks: the prober then keeps no TIME_WAIT (1,000 backends at 1s would
// hold 60,000) and the backend frees the connection at once.
func HTTP(spec HTTPSpec) func(ctx context.Context, addr netip.Addr) error {
	if spec.Path == "" {
		spec.Path = "/"
	}
	if len(spec.Expect) == 0 {
		spec.Expect = StatusCodes{{200, 399}}
	}
	name := spec.Name()
	var dialer net.Dialer
	return func(ctx context.Context, addr netip.Addr) error {
		var within time.Duration
		if deadline, ok := ctx.Deadline(); ok {
			within = time.Until(deadline)
		}
		fail := func(err error) error { return fmt.Errorf("%s: %w", name, err) }
		raw, err := dialer.DialContext(ctx, "tcp", netip.AddrPortFrom(addr, spec.Port).String())
		if err != nil {
			return fail(unwrapDial(ctx, within, err))
		}
		if tc, ok := raw.(*net.TCPConn); ok {
			tc.SetLinger(0)
		}
		defer raw.Close()
		stop := context.AfterFunc(ctx, func() { raw.Close() }) // ends a read or a handshake in flight
		defer stop()
		if deadline, ok := ctx.Deadline(); ok {
			raw.SetDeadline(deadline)
		}
		host := spec.Host
		if host == "" {
			host = addr.String()
		}
		conn := raw
		if spec.TLS != nil {
			cfg := spec.TLS.Clone()
			cfg.ServerName = host // a name, or the backend's address, which then must be in the certificate
			tc := tls.Client(raw, cfg)
			if err := tc.HandshakeContext(ctx); err != nil {
				return fail(tlsFailure(ctx, within, err))
			}
			conn = tc
		}
		if _, err := io.WriteString(conn, request(spec.Path, host, spec.Port, spec.TLS != nil)); err != nil {
			return fail(unwrapDial(ctx, within, err))
		}
		head := &headReader{r: conn, left: MaxHeaderRead}
		resp, err := http.ReadResponse(bufio.NewReader(head), nil)
		if err != nil {
			switch {
			case head.left == 0:
				return fail(errHeaderTooLong)
			case head.err != nil:
				// The connection failed mid-line (a deadline, a reset): that is the cause, not
				// the part line that bufio hands on without the error ("malformed HTTP
				// response "HT"" from a backend that trickles its answer).
				return fail(readFailure(ctx, within, head.err))
			}
			return fail(readFailure(ctx, within, err))
		}
		head.left = math.MaxInt64 // the body's reads are bounded below, by MaxBodyRead
		// The body is never closed: closing it would read it to its end first, and a body the
		// verdict does not need may be endless. Closing the connection (deferred) ends it.
		if !spec.Expect.Has(resp.StatusCode) {
			return fail(StatusError{resp.StatusCode})
		}
		if spec.Body == "" {
			return nil
		}
		body, err := io.ReadAll(io.LimitReader(resp.Body, MaxBodyRead))
		if spec.BodyExact {
			if err != nil {
				return fail(readFailure(ctx, within, err))
			}
			if trimmed := bytes.TrimSpace(body); string(trimmed) != spec.Body {
				return fail(bodyMismatch{spec.Body, trimmed})
			}
			return nil
		}
		if !bytes.Contains(body, []byte(spec.Body)) {
			if err != nil {
				return fail(readFailure(ctx, within, err))
			}
			return fail(bodyError{spec.Body, len(body)})
		}
		return nil
	}
}

// Name is the check as logs and metrics name it: "http :8080/healthz".
func (s HTTPSpec) Name() string {
	scheme := "http"
	if s.TLS != nil {
		scheme = "https"
	}
	path := s.Path
	if path == "" {
		path = "/"
	}
	return fmt.Sprintf("%s :%d%s", scheme, s.Port, path)
}

// request is the GET a check sends. HTTP/1.1 with Connection: close, so that a server answers
// once and does not wait for another request.
func request(path, host string, port uint16, tls bool) string {
	if strings.Contains(host, ":") {
		host = "[" + host + "]" // an IPv6 literal, as RFC 3986 writes it in a Host header
	}
	if (!tls && port != 80) || (tls && port != 443) {
		host += ":" + strconv.Itoa(int(port))
	}
	return "GET " + path + " HTTP/1.1\r\nHost: " + host + "\r\nUser-Agent: healthdns\r\nAccept: */*\r\nConnection: close\r\n\r\n"
}

// headReader reads a response for http.ReadResponse: at most left bytes, and it keeps the
// connection's error, which bufio drops when it ends a line in the middle.
type headReader struct {
	r    io.Reader
	left int64
	err  error
}

func (h *headReader) Read(p []byte) (int, error) {
	if h.left <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > h.left {
		p = p[:h.left]
	}
	n, err := h.r.Read(p)
	h.left -= int64(n)
	if err != nil && err != io.EOF {
		h.err = err
	}
	return n, err
}

// errHeaderTooLong is a response whose status line and header run past MaxHeaderRead.
var errHeaderTooLong = fmt.Errorf("the response's header is over %d KiB", MaxHeaderRead>>10)

// bodyError is a response whose body lacks the check's text.
type bodyError struct {
	text string
	read int
}

func (e bodyError) Error() string {
	return fmt.Sprintf("body: no %q in its first %d bytes", e.text, e.read)
}

// bodyMismatch is a response whose body is not the check's text (body_exact).
type bodyMismatch struct {
	want string
	got  []byte // trimmed
}

// bodyQuoted bounds how much of a body that is not the text a failure quotes: enough to tell
// "not ok" from "ok", and a log line stays a line.
const bodyQuoted = 64

func (e bodyMismatch) Error() string {
	if len(e.got) > bodyQuoted {
		return fmt.Sprintf("body: %q... (%d bytes read), want exactly %q", e.got[:bodyQuoted], len(e.got), e.want)
	}
	return fmt.Sprintf("body: %q, want exactly %q", e.got, e.want)
}

// tlsError is a handshake that failed for another reason than the certificate's.
type tlsError struct{ err error }

func (e tlsError) Error() string { return "tls: " + e.err.Error() }

func (e tlsError) Unwrap() error { return e.err }

// StatusError is a response whose status the check does not expect.
type StatusError struct{ Code int }

func (e StatusError) Error() string { return "status " + strconv.Itoa(e.Code) }

func tlsFailure(ctx context.Context, within time.Duration, err error) error {
	var verify *tls.CertificateVerificationError
	if errors.As(err, &verify) {
		return fmt.Errorf("tls: %w", verify.Err)
	}
	cause := unwrapDial(ctx, within, err)
	// A handshake that ran out of time is a timeout, not a TLS failure: the loop's deadline
	// then speaks for it (Blocking drops timeouts), as for any other check.
	if ctx.Err() != nil || errors.Is(err, io.EOF) || Reason(cause) == ReasonTimeout {
		return cause
	}
	return tlsError{cause}
}

func readFailure(ctx context.Context, within time.Duration, err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return errors.New("connection closed before a complete answer")
	}
	return unwrapDial(ctx, within, err)
}

// StatusCodes is a set of HTTP statuses: ranges, each from and to included.
type StatusCodes [][2]int

// Has reports whether code is in the set.
func (s StatusCodes) Has(code int) bool {
	for _, r := range s {
		if code >= r[0] && code <= r[1] {
			return true
		}
	}
	return false
}

// String writes the set as ParseStatusCodes reads it.
func (s StatusCodes) String() string {
	parts := make([]string, len(s))
	for i, r := range s {
		parts[i] = strconv.Itoa(r[0])
		if r[1] != r[0] {
			parts[i] += "-" + strconv.Itoa(r[1])
		}
	}
	return strings.Join(parts, ",")
}

// ParseStatusCodes reads "200", "200-299" or "200,204,301-302".
func ParseStatusCodes(s string) (StatusCodes, error) {
	var codes StatusCodes
	for _, part := range strings.Split(s, ",") {
		lo, hi, isRange := strings.Cut(part, "-")
		from, err1 := strconv.Atoi(lo)
		to, err2 := from, error(nil)
		if isRange {
			to, err2 = strconv.Atoi(hi)
		}
		if err1 != nil || err2 != nil || from < 100 || to > 599 || from > to {
			return nil, fmt.Errorf("invalid status codes %q: want codes from 100 to 599 such as 200, 200-299 or 200,204,301-302", s)
		}
		codes = append(codes, [2]int{from, to})
	}
	return codes, nil
}
