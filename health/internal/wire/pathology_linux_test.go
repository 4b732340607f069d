package wire

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/healthdns/healthdns/health/internal/engine"
	"github.com/healthdns/healthdns/test/testkit"
)

// trickle writes s a byte every interval, until it is written or the connection fails.
func trickle(c net.Conn, s string, every time.Duration) {
	for i := range len(s) {
		if _, err := c.Write([]byte{s[i]}); err != nil {
			return
		}
		time.Sleep(every)
	}
}

// endless writes chunk until the connection fails, and returns how much it wrote.
func endless(c net.Conn, chunk []byte) int {
	written := 0
	for {
		n, err := c.Write(chunk)
		written += n
		if err != nil {
			return written
		}
	}
}

// checkOnLoop probes addr once through a blocking loop, as a monitor does, with run as the check
// and timeout as the probe's: the error is the one an operator reads, the loop's own timeout
// included.
func checkOnLoop(t *testing.T, name string, run func(context.Context, netip.Addr) error, addr netip.Addr, timeout time.Duration) error {
	t.Helper()
	l := engine.New[BlockingState](NewBlocking())
	l.Retain()
	defer l.Release()
	results := make(chan engine.Result, 1)
	tk := l.Schedule(engine.Target{
		Addr: addr, Interval: time.Hour, Timeout: timeout, Tries: 1, Budget: engine.NewBudget(),
		Run: run, Name: name,
		Report: func(r engine.Result) {
			select {
			case results <- r:
			default:
			}
		},
	})
	defer tk.Unschedule()
	select {
	case r := <-results:
		return r.Err
	case <-time.After(timeout + time.Minute):
		t.Fatalf("%s: no result a minute past its timeout", name)
		return nil
	}
}

// wantVerdict probes addr once with run through checkOnLoop, and checks its error: want, after
// the check's name, or a pass for "". A check that must run out of time (want says "within")
// gets timeout; the others get answered, which their answer ends at once, so that a loaded
// machine does not time them out.
func wantVerdict(t *testing.T, name string, run func(context.Context, netip.Addr) error, addr netip.Addr, timeout time.Duration, want string) {
	t.Helper()
	within := answered
	if strings.Contains(want, " within ") {
		within = timeout
	}
	err := checkOnLoop(t, name, run, addr, within)
	if want != "" {
		want = name + ": " + want
	}
	if got := fmt.Sprint(err); err == nil && want != "" || err != nil && got != want {
		t.Errorf("check: %v, want %q", err, want)
	}
}

// HTTP backends that misbehave: every check ends by its timeout at the latest, with an error
// that says what went wrong, reads a bounded amount, and leaves no connection or goroutine.
func TestHTTPPathologies(t *testing.T) {
	addr := netip.MustParseAddr("127.0.10.11")
	const timeout = 500 * time.Millisecond // for the checks that must time out (wantVerdict)
	head := "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
	tenMB := []byte(head + "Content-Length: 10485762\r\n\r\n" + strings.Repeat("x", 10<<20) + "ok")
	cases := []struct {
		name  string
		spec  HTTPSpec
		serve func(c net.Conn)
		want  string // the error, but for the check's name and port; "" to pass
	}{{
		name:  "accepts and never answers",
		serve: func(c net.Conn) { io.Copy(io.Discard, c) },
		want:  "no answer within 500ms",
	}, {
		name:  "accepts and never answers the TLS handshake",
		spec:  HTTPSpec{TLS: &tls.Config{InsecureSkipVerify: true}},
		serve: func(c net.Conn) { io.Copy(io.Discard, c) },
		want:  "no answer within 500ms",
	}, {
		name:  "trickles its header",
		serve: func(c net.Conn) { testkit.ReadRequest(c); trickle(c, head+"\r\nok", 100*time.Millisecond) },
		want:  "no answer within 500ms",
	}, {
		name: "trickles the body the check reads",
		spec: HTTPSpec{Body: "ok"},
		serve: func(c net.Conn) {
			testkit.ReadRequest(c)
			c.Write([]byte(head + "Content-Length: 100\r\n\r\n"))
			trickle(c, strings.Repeat(".", 98)+"ok", 100*time.Millisecond)
		},
		want: "no answer within 500ms",
	}, {
		// The status is the verdict: a body the check does not need is not read, however long.
		name: "answers 200 with an endless body",
		serve: func(c net.Conn) {
			testkit.ReadRequest(c)
			c.Write([]byte(head + "Content-Length: 1099511627776\r\n\r\n"))
			endless(c, make([]byte, 64<<10))
		},
	}, {
		name: "answers 200 with an endless chunked body",
		serve: func(c net.Conn) {
			testkit.ReadRequest(c)
			c.Write([]byte(head + "Transfer-Encoding: chunked\r\n\r\n"))
			endless(c, []byte("10000\r\n"+strings.Repeat("x", 0x10000)+"\r\n"))
		},
	}, {
		name: "answers 10 MB without the text",
		spec: HTTPSpec{Body: "ok"},
		serve: func(c net.Conn) {
			testkit.ReadRequest(c)
			c.Write(tenMB)
		},
		want: `body: no "ok" in its first 65536 bytes`,
	}, {
		name: "sends an endless header",
		serve: func(c net.Conn) {
			testkit.ReadRequest(c)
			c.Write([]byte(head + "X-Pad: "))
			endless(c, []byte(strings.Repeat("x", 64<<10)))
		},
		want: "the response's header is over 64 KiB",
	}, {
		name: "sends endless header lines",
		serve: func(c net.Conn) {
			testkit.ReadRequest(c)
			c.Write([]byte(head))
			endless(c, []byte(strings.Repeat("X-Pad: x\r\n", 4096)))
		},
		want: "the response's header is over 64 KiB",
	}, {
		// Redirects are not followed: the first 3xx is the answer.
		name: "redirects to itself",
		spec: HTTPSpec{Expect: StatusCodes{{200, 299}}},
		serve: func(c net.Conn) {
			testkit.ReadRequest(c)
			c.Write([]byte("HTTP/1.1 302 Found\r\nLocation: /\r\nContent-Length: 0\r\n\r\n"))
			io.Copy(io.Discard, c)
		},
		want: "status 302",
	}}
	goroutines, fds := runtime.NumGoroutine(), openFiles(t)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b := testkit.ServeTCP(t, addr.String(), tc.serve)
			spec := tc.spec
			spec.Port = b.Port
			wantVerdict(t, spec.Name(), HTTP(spec), addr, timeout, tc.want)
			if n := b.Accepted(); n != 1 {
				t.Errorf("%d connections for one probe of one try", n)
			}
		})
	}
	// What the checks opened is closed; the backends' goroutines are the cleanups'.
	waitFor(t, "the checks' descriptors and goroutines to go", func() bool {
		return openFiles(t) <= fds && runtime.NumGoroutine() <= goroutines
	})
}

// A TCP backend that accepts and then neither sends nor closes passes a TCP check (it listens),
// and holds nothing of the prober's: the connect wire resets each connection it made, the
// half-open wire makes none.
func TestTCPBackendThatHolds(t *testing.T) {
	addr := netip.MustParseAddr("127.0.10.12")
	type probeOf func(t *testing.T, port uint16) func(context.Context, netip.Addr) error
	wires := map[string]probeOf{
		"connect": func(t *testing.T, port uint16) func(context.Context, netip.Addr) error {
			return probePortVia(t, NewConnect(), port)
		},
	}
	if c, err := net.ListenPacket("ip4:tcp", "127.0.0.1"); err == nil {
		c.Close()
		wires["half-open"] = func(t *testing.T, port uint16) func(context.Context, netip.Addr) error {
			return probePortVia(t, NewHalfOpen(), port)
		}
	}
	for name, wire := range wires {
		t.Run(name, func(t *testing.T) {
			var resets atomic.Int64
			b := testkit.ServeTCP(t, addr.String(), func(c net.Conn) {
				if _, err := c.Read(make([]byte, 1)); err != nil && !errors.Is(err, net.ErrClosed) && !errors.Is(err, io.EOF) {
					resets.Add(1) // the prober's reset
				}
			})
			probe := wire(t, b.Port)
			if err := probeWithin(probe, addr, answered); err != nil { // opens the wire's own sockets
				t.Fatalf("first probe of a backend that holds its connections: %v", err)
			}
			fds := openFiles(t)
			const probes = 20
			for i := 1; i < probes; i++ {
				if err := probeWithin(probe, addr, answered); err != nil {
					t.Fatalf("probe %d of a backend that holds its connections: %v", i, err)
				}
			}
			waitFor(t, "the prober's sockets to close", func() bool { return openFiles(t) <= fds })
			if name == "connect" {
				waitFor(t, "every connection to be reset by the prober", func() bool { return resets.Load() == probes })
			} else if n := b.Accepted(); n != 0 {
				t.Errorf("half-open probes made %d connections", n)
			}
		})
	}
}

// Scripts that misbehave: each ends by its timeout at the latest, with an error that says what
// happened, keeps at most the first 256 bytes of its output, and leaves no process, descriptor
// or goroutine behind.
func TestExecPathologies(t *testing.T) {
	addr := netip.MustParseAddr("127.0.10.13")
	const timeout = time.Second // for the scripts that must not finish (wantVerdict)
	cases := []struct {
		name, body string
		want       string // the error after "exec PATH: "; "" to pass
	}{
		{"forks and hangs", "sleep 302 & sleep 302 & wait", "did not finish within 1s: killed"},
		{"prints megabytes on one line", "head -c 20000000 /dev/zero | tr '\\0' x; exit 3", "exit 3: " + strings.Repeat("x", execReasonLen)},
		{"prints without end", "yes", "did not finish within 1s: killed"},
		{"closes its output and keeps running", "exec >&- 2>&-; sleep 303", "did not finish within 1s: killed"},
		{"closes its output, leaves a child and exits 0", "exec >&- 2>&-; sleep 304 & exit 0", ""},
	}
	goroutines, fds := runtime.NumGoroutine(), openFiles(t)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			path := script(t, tc.body)
			spec := ExecSpec{Path: path}
			wantVerdict(t, spec.Name(), Exec(spec), addr, timeout, tc.want)
			waitFor(t, "the script's processes to end", func() bool { return testkit.ProcessesWithEnv(t, "HEALTHDNS_BACKEND="+addr.String()) == 0 })
		})
	}
	waitFor(t, "the checks' descriptors and goroutines to go", func() bool {
		return openFiles(t) <= fds && runtime.NumGoroutine() <= goroutines
	})
}

// A backend that stops in the middle of its status line is a timeout, whichever of the socket's
// deadline and the probe's context ends the read first: the part line it sent is not the answer.
// Called directly, not through a loop, whose own timeout would speak for it.
func TestHTTPStopsMidLine(t *testing.T) {
	addr := netip.MustParseAddr("127.0.10.11")
	b := testkit.ServeTCP(t, addr.String(), func(c net.Conn) {
		testkit.ReadRequest(c)
		c.Write([]byte("HT"))
		io.Copy(io.Discard, c)
	})
	check := HTTP(HTTPSpec{Port: b.Port})
	for range 5 {
		err := probeWithin(check, addr, 200*time.Millisecond)
		// "within" says what was left of the context when the check began: at most 200ms.
		if want := fmt.Sprintf("http :%d/: no answer within ", b.Port); !strings.HasPrefix(fmt.Sprint(err), want) {
			t.Fatalf("check: %v, want %s...", err, want)
		}
	}
}
