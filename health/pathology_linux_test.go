package health

import (
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/healthdns/healthdns/health/internal/testnet"
	"github.com/healthdns/healthdns/health/internal/wire"
	"github.com/healthdns/healthdns/test/testkit"
)

// deadBackends is how many backends TestThousandBackendsTimingOut black-holes per check.
const deadBackends = 1000

// A thousand backends per check (ICMP, TCP, HTTP) that answer nothing, all probed from the same
// moment: each goes down with its check's timeout as the reason, the healthy backends probed
// beside them stay up, and once they are released the goroutines and descriptors they took are
// given back. The loops' lateness p99, and the goroutines, descriptors and RSS at their peak, are
// logged, not asserted (docs/RELIABILITY.md, Probe pathologies):
//
//	go test -count=1 -v -run TestThousandBackendsTimingOut ./health/
func TestThousandBackendsTimingOut(t *testing.T) {
	if !testnet.InOwnNetns() {
		testnet.RunInOwnNetns(t)
		return
	}
	// 127.6.0.0/16 goes to a TUN device that no one reads: a black hole, as a switch port whose
	// host has gone. (On loopback every address answers.)
	testnet.Wire(t, "hd6", netip.MustParsePrefix("127.6.0.0/16"))

	healthy := netip.MustParseAddr("127.0.10.20")
	tcpLn, err := net.Listen("tcp", healthy.String()+":0")
	if err != nil {
		t.Fatal(err)
	}
	defer tcpLn.Close()
	go testnet.AcceptAndClose(tcpLn)
	httpLn, err := net.Listen("tcp", healthy.String()+":0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok") }), ErrorLog: log.New(io.Discard, "", 0)}
	go srv.Serve(httpLn)
	defer srv.Close()
	port := func(ln net.Listener) uint16 { return uint16(ln.Addr().(*net.TCPAddr).Port) }

	dead := func(c Check) Spec {
		return Spec{Check: c, Interval: time.Second, Timeout: 500 * time.Millisecond, Rise: 1, Fall: 1}
	}
	// Loopback answers at once: the healthy backends' timeout and fall are only there to outlast
	// a machine loaded by other tests.
	live := func(c Check) Spec {
		return Spec{Check: c, Interval: time.Second, Timeout: 900 * time.Millisecond, Rise: 1, Fall: 3}
	}
	checks := []Check{{Kind: ICMP}, {Kind: TCP, Port: 80}, {Kind: HTTP, Port: 80}}
	healthyChecks := []Check{{Kind: ICMP}, {Kind: TCP, Port: port(tcpLn)}, {Kind: HTTP, Port: port(httpLn)}}

	for name, opts := range map[string][]Option{"half-open": nil, "connect": {WithConnect()}} {
		t.Run(name, func(t *testing.T) {
			reg := NewRegistry(&recorder{}, opts...)
			thousandDead(t, reg, healthy, healthyChecks, live, checks, dead)
		})
	}
}

func thousandDead(t *testing.T, reg *Registry, healthy netip.Addr, healthyChecks []Check, live func(Check) Spec, checks []Check, dead func(Check) Spec) {
	baseGoroutines, baseFDs, baseRSS := runtime.NumGoroutine(), openFDs(t), rssKiB(t)
	var healthyLeases []*Lease
	for _, c := range healthyChecks {
		healthyLeases = append(healthyLeases, reg.Acquire(Target{Addr: healthy, Spec: live(c)}, "z."))
	}
	for _, l := range healthyLeases {
		<-l.Checked()
		if !l.Up() {
			t.Fatalf("healthy %s is down: %v", l.Status().Target, l.Status().LastFailure)
		}
	}
	time.Sleep(3 * time.Second) // lateness samples of the healthy targets alone
	logLoops(t, "healthy backends alone", reg)

	var deadLeases []*Lease
	for i := range deadBackends {
		addr := netip.AddrFrom4([4]byte{127, 6, byte(i >> 8), byte(i)})
		for _, c := range checks {
			deadLeases = append(deadLeases, reg.Acquire(Target{Addr: addr, Spec: dead(c)}, "z."))
		}
	}
	var peakMu sync.Mutex
	peakGoroutines, peakFDs, peakRSS := 0, 0, 0
	stopSampling := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		for {
			g, f, r := runtime.NumGoroutine(), openFDs(t), rssKiB(t)
			peakMu.Lock()
			peakGoroutines, peakFDs, peakRSS = max(peakGoroutines, g), max(peakFDs, f), max(peakRSS, r)
			peakMu.Unlock()
			select {
			case <-stopSampling:
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()
	deadline := time.Now().Add(2 * time.Minute)
	for _, l := range deadLeases {
		select {
		case <-l.Checked():
		case <-time.After(time.Until(deadline)):
			t.Fatalf("%s: no verdict in two minutes", l.Status().Target)
		}
	}
	time.Sleep(5 * time.Second) // five more rounds of the dead, the healthy beside them
	close(stopSampling)
	<-sampled

	reasons := map[string]int{}
	for _, l := range deadLeases {
		st := l.Status()
		if st.Up {
			t.Fatalf("%s is up: nothing answers it", st.Target)
		}
		want := st.Target.Spec.Check.String() + ": no answer within 500ms"
		if st.Target.Spec.Check.Kind == ICMP {
			want = "icmp: no reply within 500ms"
		}
		if got := fmt.Sprint(st.LastFailure); got != want {
			t.Fatalf("%s failed with %q, want %q", st.Target, got, want)
		}
		reasons[wire.Reason(st.LastFailure)]++
	}
	for _, l := range healthyLeases {
		if st := l.Status(); !st.Up || st.Transitions != 0 {
			t.Errorf("healthy %s: up %v after %d transitions (last failure: %v)", st.Target, st.Up, st.Transitions, st.LastFailure)
		}
	}
	logLoops(t, fmt.Sprintf("with %d dead backends per check", deadBackends), reg)
	t.Logf("dead backends' reasons: %v", reasons)
	peakMu.Lock()
	t.Logf("goroutines %d, at the peak %d; descriptors %d, at the peak %d; RSS %d KiB, at the peak %d KiB",
		baseGoroutines, peakGoroutines, baseFDs, peakFDs, baseRSS, peakRSS)
	peakMu.Unlock()

	for _, l := range append(deadLeases, healthyLeases...) {
		l.Release()
	}
	wait := time.Now().Add(time.Minute)
	for runtime.NumGoroutine() > baseGoroutines || openFDs(t) > baseFDs {
		if time.Now().After(wait) {
			t.Fatalf("a minute after the release: %d goroutines (%d before), %d descriptors (%d before)",
				runtime.NumGoroutine(), baseGoroutines, openFDs(t), baseFDs)
		}
		time.Sleep(20 * time.Millisecond)
	}
	runtime.GC()
	t.Logf("after the release: goroutines %d, descriptors %d, RSS %d KiB", runtime.NumGoroutine(), openFDs(t), rssKiB(t))
}

func logLoops(t *testing.T, when string, reg *Registry) {
	t.Helper()
	for _, l := range reg.Loops() {
		t.Logf("%s: loop %s: %d targets, lateness p99 %v, stalled %v", when, l.Wire, l.Targets, l.LatenessP99, l.Stalled)
	}
}

func rssKiB(t *testing.T) int {
	t.Helper()
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Skipf("reading RSS: %v", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			n, _ := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(rest), " kB"))
			return n
		}
	}
	return 0
}

// Two hundred backends whose script forks and hangs, timing out at once, with 8 scripts at a
// time: every one goes down with "did not finish", the processes at any moment stay within
// what 8 scripts start (a shell and its sleeps each), and none is left after the release.
func TestHangingScriptsStayBounded(t *testing.T) {
	const backends, concurrency = 200, 8
	path := filepath.Join(t.TempDir(), "hang")
	if err := os.WriteFile(path, []byte("#!/bin/sh\nsleep 300 & sleep 300\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	spec := Spec{Check: Check{Kind: Exec, Command: path}, Interval: time.Second, Timeout: 300 * time.Millisecond, Rise: 1, Fall: 1}
	const env = "HEALTHDNS_BACKEND=127.6.1."
	baseGoroutines, baseFDs := runtime.NumGoroutine(), openFDs(t)
	reg := NewRegistry(&recorder{})
	reg.SetExecConcurrency(concurrency)
	var leases []*Lease
	for i := range backends {
		leases = append(leases, reg.Acquire(Target{Addr: netip.AddrFrom4([4]byte{127, 6, 1, byte(i)}), Spec: spec}, "z."))
	}
	peak := 0
	deadline := time.Now().Add(2 * time.Minute)
	for _, l := range leases {
		for !l.IsChecked() {
			peak = max(peak, testkit.ProcessesWithEnv(t, env))
			if time.Now().After(deadline) {
				t.Fatalf("%s: no verdict in two minutes", l.Status().Target)
			}
			time.Sleep(10 * time.Millisecond)
		}
		st := l.Status()
		if want := "exec " + path + ": did not finish within 300ms: killed"; st.Up || fmt.Sprint(st.LastFailure) != want {
			t.Fatalf("%s: up %v, last failure %v, want %s", st.Target, st.Up, st.LastFailure, want)
		}
	}
	t.Logf("%d scripts at most at once: processes of theirs at the peak %d; goroutines %d, descriptors %d",
		concurrency, peak, runtime.NumGoroutine(), openFDs(t))
	// A shell and two sleeps a script; a group killed as the next starts may not have died yet.
	if peak > 2*3*concurrency {
		t.Errorf("%d processes of the scripts at once, with %d scripts at a time", peak, concurrency)
	}
	for _, l := range leases {
		l.Release()
	}
	wait := time.Now().Add(time.Minute)
	for testkit.ProcessesWithEnv(t, env) > 0 || runtime.NumGoroutine() > baseGoroutines || openFDs(t) > baseFDs {
		if time.Now().After(wait) {
			t.Fatalf("a minute after the release: %d processes of the scripts, %d goroutines (%d before), %d descriptors (%d before)",
				testkit.ProcessesWithEnv(t, env), runtime.NumGoroutine(), baseGoroutines, openFDs(t), baseFDs)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
