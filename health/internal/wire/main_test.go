package wire

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/healthdns/healthdns/health/internal/engine"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// probeVia returns a check that probes an address once through a new loop over w, as a
// monitor's first probe does, with the timeout of ctx's deadline. The loop is retained until the
// test ends.
func probeVia[S any](t testing.TB, w engine.Wire[S]) func(ctx context.Context, addr netip.Addr) error {
	t.Helper()
	return probePortVia(t, w, 0)
}

// probePortVia is probeVia for the wires that probe a port.
func probePortVia[S any](t testing.TB, w engine.Wire[S], port uint16) func(ctx context.Context, addr netip.Addr) error {
	t.Helper()
	l := engine.New[S](w)
	l.Retain()
	t.Cleanup(l.Release)
	budget := engine.NewBudget()
	return func(ctx context.Context, addr netip.Addr) error {
		timeout := time.Second
		if d, ok := ctx.Deadline(); ok {
			timeout = time.Until(d)
		}
		results := make(chan engine.Result, 1)
		ticket := l.Schedule(engine.Target{
			Addr: addr, Port: port, Interval: time.Hour, Timeout: timeout, Budget: budget,
			Report: func(r engine.Result) {
				select {
				case results <- r:
				default:
				}
			},
		})
		defer ticket.Unschedule()
		select {
		case r := <-results:
			return r.Err
		case <-ctx.Done():
		}
		if errors.Is(ctx.Err(), context.Canceled) {
			return ctx.Err()
		}
		select { // the loop's deadline is ctx's: its timeout is on its way
		case r := <-results:
			return r.Err
		case <-time.After(time.Second):
			return fmt.Errorf("no result a second past the probe's deadline")
		}
	}
}

// answered is the timeout of a probe whose outcome must not be a timeout: a probe that gets its
// answer returns at once, and one that is waited on this long is not waiting for a busy machine
// (another go test ./... on the same two cores took a TLS handshake past 1.9 s).
const answered = 20 * time.Second

func probeWithin(probe func(context.Context, netip.Addr) error, addr netip.Addr, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return probe(ctx, addr)
}

// needRawICMP skips t unless this process may open raw ICMP sockets.
func needRawICMP(t *testing.T) {
	t.Helper()
	c, err := net.ListenPacket("ip4:icmp", "0.0.0.0")
	if err != nil {
		t.Skipf("raw ICMP sockets need CAP_NET_RAW (root): %v", err)
	}
	c.Close()
}
