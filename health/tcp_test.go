package health

import (
	"context"
	"errors"
	"fmt"
	"net"
	"syscall"
	"testing"
	"time"
)

// listenTCP starts a TCP backend on loopback that accepts and closes, and returns its port.
func listenTCP(t testing.TB) (net.Listener, uint16) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go acceptAndClose(ln)
	return ln, uint16(ln.Addr().(*net.TCPAddr).Port)
}

func TestTCPProber(t *testing.T) {
	t.Run("up", func(t *testing.T) {
		_, port := listenTCP(t)
		p := &TCPProber{Port: port}
		if err := probeWithin(p, loopback4, time.Second); err != nil {
			t.Fatalf("listening port: %v", err)
		}
	})

	t.Run("up over IPv6", func(t *testing.T) {
		ln, err := net.Listen("tcp", "[::1]:0")
		if err != nil {
			t.Skipf("no IPv6 loopback: %v", err)
		}
		defer ln.Close()
		go acceptAndClose(ln)
		p := &TCPProber{Port: uint16(ln.Addr().(*net.TCPAddr).Port)}
		if err := probeWithin(p, loopback6, time.Second); err != nil {
			t.Fatalf("listening port on ::1: %v", err)
		}
	})

	t.Run("refused", func(t *testing.T) {
		ln, port := listenTCP(t)
		ln.Close() // the port was ours a moment ago, so nothing else listens on it
		err := probeWithin(&TCPProber{Port: port}, loopback4, time.Second)
		if want := fmt.Sprintf("tcp :%d: connection refused", port); err == nil || err.Error() != want {
			t.Fatalf("error %v, want %q", err, want)
		}
		if !errors.Is(err, syscall.ECONNREFUSED) {
			t.Errorf("error %v does not wrap ECONNREFUSED", err)
		}
	})

	// A listener with a full backlog would make a hanging dial, but not reliably; a context
	// whose time is already up exercises the same path: the dial fails at once, and says so.
	// The monitor's timeout, as the Corefile gave it, not the time that was left; a probe
	// cancelled with no timeout recorded cannot say more than "the timeout".
	want := map[string]string{"deadline passed": "no answer within 200ms", "cancelled": "no answer within the timeout"}
	expired := map[string]func() (context.Context, context.CancelFunc){
		"deadline passed": func() (context.Context, context.CancelFunc) {
			return context.WithDeadline(withProbeTimeout(context.Background(), 200*time.Millisecond), time.Now().Add(-time.Millisecond))
		},
		"cancelled": func() (context.Context, context.CancelFunc) {
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			return ctx, cancel
		},
	}
	for name, ctxFunc := range expired {
		t.Run(name, func(t *testing.T) {
			_, port := listenTCP(t) // it would answer: only the context can fail the probe
			ctx, cancel := ctxFunc()
			defer cancel()
			done := make(chan error, 1)
			go func() { done <- (&TCPProber{Port: port}).Probe(ctx, loopback4) }()
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
