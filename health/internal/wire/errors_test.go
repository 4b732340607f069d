package wire

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/healthdns/healthdns/health/internal/testnet"
	"github.com/healthdns/healthdns/test/testkit"
)

// Every failure a check can report falls in one of the few reasons a metric is labelled with.
func TestReason(t *testing.T) {
	addr := netip.MustParseAddr("127.0.0.1")
	ln, closed := testnet.ListenTCP(t)
	ln.Close()
	port := serveHTTP(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/down" {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte("fine"))
	}, nil)
	ca := testkit.NewCA(t, "ca")
	cert := testkit.NewCA(t, "other").Server(t, []string{"app.lan"})
	tlsPort := serveHTTP(t, func(http.ResponseWriter, *http.Request) {}, &cert)
	probe := func(run func(context.Context, netip.Addr) error) error { return probeWithin(run, addr, answered) }
	tests := []struct {
		want string
		err  error
	}{
		{ReasonRefused, probe(Dial(closed))},
		{ReasonRefused, probe(HTTP(HTTPSpec{Port: closed}))},
		{ReasonHTTPStatus, probe(HTTP(HTTPSpec{Port: port, Path: "/down"}))},
		{ReasonHTTPBody, probe(HTTP(HTTPSpec{Port: port, Body: "ok!"}))},
		{ReasonHTTPBody, probe(HTTP(HTTPSpec{Port: port, Body: "fin", BodyExact: true}))},
		{ReasonTLS, probe(HTTP(HTTPSpec{Port: tlsPort, Host: "app.lan", TLS: &tls.Config{RootCAs: ca.Pool()}}))},
		{ReasonTLS, probe(HTTP(HTTPSpec{Port: port, TLS: &tls.Config{InsecureSkipVerify: true}}))}, // plain HTTP on the port
		{ReasonExecExit, probe(Exec(ExecSpec{Path: "/bin/false"}))},
		{ReasonTimeout, fmt.Errorf("tcp :80: %w", errTimeout{time.Second, context.DeadlineExceeded})},
		{ReasonTimeout, fmt.Errorf("icmp: %w", errNoReply{time.Second})},
		{ReasonTimeout, fmt.Errorf("exec /x: %w", errUnfinished{time.Second})},
		{ReasonTimeout, fmt.Errorf("https :443/: %w", tlsFailure(context.Background(), time.Second, os.ErrDeadlineExceeded))},
		{ReasonUnreachable, fmt.Errorf("icmp: %w", syscall.ENETUNREACH)},
		{ReasonError, errors.New("something else")},
		{"", nil},
	}
	for _, tc := range tests {
		if got := Reason(tc.err); got != tc.want {
			t.Errorf("Reason(%v) = %q, want %q", tc.err, got, tc.want)
		}
	}
}
