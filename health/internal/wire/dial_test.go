package wire

import (
	"context"
	"errors"
	"fmt"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/healthdns/healthdns/health/internal/testnet"
)

// TestDial connects as a TCP check does where no loop of ours connects.
func TestDial(t *testing.T) {
	t.Run("up", func(t *testing.T) {
		_, port := testnet.ListenTCP(t)
		if err := probeWithin(Dial(port), testnet.Loopback4, answered); err != nil {
			t.Fatalf("listening port: %v", err)
		}
	})

	t.Run("up over IPv6", func(t *testing.T) {
		ln, err := net.Listen("tcp", "[::1]:0")
		if err != nil {
			t.Skipf("no IPv6 loopback: %v", err)
		}
		defer ln.Close()
		go testnet.AcceptAndClose(ln)
		if err := probeWithin(Dial(uint16(ln.Addr().(*net.TCPAddr).Port)), testnet.Loopback6, answered); err != nil {
			t.Fatalf("listening port on ::1: %v", err)
		}
	})

	t.Run("refused", func(t *testing.T) {
		ln, port := testnet.ListenTCP(t)
		ln.Close() // the port was ours a moment ago, so nothing else listens on it
		err := probeWithin(Dial(port), testnet.Loopback4, answered)
		if want := fmt.Sprintf("tcp :%d: connection refused", port); err == nil || err.Error() != want {
			t.Fatalf("error %v, want %q", err, want)
		}
		if !errors.Is(err, syscall.ECONNREFUSED) {
			t.Errorf("error %v does not wrap ECONNREFUSED", err)
		}
	})

	// A listener with a full backlog would make a hanging dial, but not reliably; a context
	// whose time is already up exercises the same path: the dial fails at once, and says so.
	// A dial cut short says no more than "the timeout": the loop's own timeout, which names the
	// configured one, is what a monitor reports (TestTCPScheduledNoAnswer).
	want := map[string]string{"deadline passed": "no answer within the timeout", "cancelled": "no answer within the timeout"}
	expired := map[string]func() (context.Context, context.CancelFunc){
		"deadline passed": func() (context.Context, context.CancelFunc) {
			return context.WithDeadline(context.Background(), time.Now().Add(-time.Millisecond))
		},
		"cancelled": func() (context.Context, context.CancelFunc) {
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			return ctx, cancel
		},
	}
	for name, ctxFunc := range expired {
		t.Run(name, func(t *testing.T) {
			_, port := testnet.ListenTCP(t) // it would answer: only the context can fail the probe
			ctx, cancel := ctxFunc()
			defer cancel()
			done := make(chan error, 1)
			go func() { done <- Dial(port)(ctx, testnet.Loopback4) }()
			var err error
			select {
			case err = <-done:
			case <-time.After(5 * time.Second):
				t.Fatal("probe with an expired context still running after 5s")
			}
			if want := fmt.Sprintf("tcp :%d: %s", port, want[name]); err == nil || err.Error() != want {
				t.Errorf("error %v, want %s", err, want)
			}
			if !errors.Is(err, ctx.Err()) {
				t.Errorf("error %v does not wrap the context's %v", err, ctx.Err())
			}
		})
	}
}
