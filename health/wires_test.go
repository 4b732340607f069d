package health

import (
	"errors"
	"net/netip"
	"os"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"

	"github.com/healthdns/healthdns/health/internal/engine"
	"github.com/healthdns/healthdns/health/internal/testnet"
)

// stampRecorder is a recorder that also notes when each probe result came in.
type stampRecorder struct {
	recorder
	stamps []time.Time
}

func (r *stampRecorder) ProbeRecorder(Target) func(Result) {
	return func(Result) {
		r.mu.Lock()
		r.probed++
		r.stamps = append(r.stamps, time.Now())
		r.mu.Unlock()
	}
}

func (r *stampRecorder) probes() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.probed
}

// changeAfter waits for more than n changes to be recorded (Checked closes just before the
// observer hears of the first verdict) and returns the latest.
func (r *stampRecorder) changeAfter(t *testing.T, n int) Change {
	t.Helper()
	var c Change
	eventually(t, "a change recorded", func() bool {
		r.mu.Lock()
		defer r.mu.Unlock()
		if len(r.changes) <= n {
			return false
		}
		c = r.changes[len(r.changes)-1]
		return true
	})
	return c
}

// requireSpread fails t if the results after the first round (at once, on purpose) bunch in one
// tenth of the interval: each target keeps a random phase, so half of them in one is a herd.
func (r *stampRecorder) requireSpread(t *testing.T, firstRound int, interval time.Duration) {
	t.Helper()
	r.mu.Lock()
	var bins [10]int
	for _, s := range r.stamps[firstRound:] {
		bins[int(time.Duration(s.UnixNano())%interval*10/interval)]++
	}
	total := len(r.stamps) - firstRound
	r.mu.Unlock()
	t.Logf("results per tenth of the interval: %v", bins)
	// A herd puts every result in a tenth or two. A busy machine that wakes the loop late
	// bunches some results too, and may leave a tenth empty, but not half of them in one.
	for i, n := range bins {
		if n > total/2 {
			t.Errorf("%d of %d results in tenth %d of the interval: a herd: %v", n, total, i, bins)
		}
	}
}

// releaseAll releases leases and fails t if any result is reported over three intervals after.
func (r *stampRecorder) releaseAll(t *testing.T, leases []*Lease, interval time.Duration) {
	t.Helper()
	for _, l := range leases {
		l.Release()
	}
	after := r.probes()
	time.Sleep(3 * interval)
	if n := r.probes(); n != after {
		t.Errorf("%d probe results reported after every lease was released", n-after)
	}
}

// rawICMPRegistry returns a registry whose pings go through the echo wire, or skips t where raw
// ICMP sockets do not open.
func rawICMPRegistry(t *testing.T, obs Observer) *Registry {
	t.Helper()
	if err := openSocket("ip4:icmp")(); err != nil {
		t.Skipf("raw ICMP sockets need CAP_NET_RAW (root): %v", err)
	}
	reg := NewRegistry(obs)
	reg.icmpDecided, reg.icmpPrivileged = true, true
	return reg
}

var icmpSpec = Spec{Check: Check{Kind: ICMP}, Interval: 200 * time.Millisecond, Timeout: 100 * time.Millisecond, Rise: 2, Fall: 2}

// Monitors of privileged pings are probed by the echo wire's one loop: every target comes up,
// probes are spread over the interval, and once the last lease is gone nothing more is
// reported and the loop and its socket are gone (goleak in TestMain checks the loop).
func TestICMPScheduled(t *testing.T) {
	obs := &stampRecorder{}
	reg := rawICMPRegistry(t, obs)
	fdsBefore := openFDs(t)
	var leases []*Lease
	for i := range 200 {
		addr := netip.AddrFrom4([4]byte{127, 3, byte(i >> 8), byte(i)})
		leases = append(leases, reg.Acquire(Target{Addr: addr, Spec: icmpSpec}, "z."))
	}
	for _, addr := range testnet.Loopbacks(t) {
		leases = append(leases, reg.Acquire(Target{Addr: addr, Spec: icmpSpec}, "z."))
	}
	for _, l := range leases {
		<-l.Checked()
		if !l.Up() {
			t.Errorf("%s: down after its first ping", l.target.Addr)
		}
	}
	eventually(t, "five rounds of probes", func() bool { return obs.probes() >= 5*len(leases) })

	// Each target keeps its random phase: results arrive spread over the interval, not in a
	// burst. 1,000 results over 10 bins, 100 expected in each: half of them in one is a herd.
	obs.requireSpread(t, len(leases), icmpSpec.Interval)
	if changes, _, _ := obs.count(); changes != len(leases) {
		t.Errorf("%d changes for %d targets that stayed up: want only the first verdicts", changes, len(leases))
	}

	obs.releaseAll(t, leases, icmpSpec.Interval)
	if st := reg.echo.Stats(); st != (engine.Stats{}) {
		t.Errorf("after the last release the loop holds %+v", st)
	}
	if n := openFDs(t); n > fdsBefore {
		t.Errorf("%d files open after the last release, %d before: the raw socket is still open", n, fdsBefore)
	}
}

// In a namespace of the test's own: a target that ignores pings goes down, having been sent
// three tries per probe; when it answers again it comes back; an address with no route fails
// at once with the kernel's reason.
func TestICMPScheduledNoReply(t *testing.T) {
	if !testnet.InOwnNetns() {
		testnet.RunInOwnNetns(t)
		return
	}
	obs := &stampRecorder{}
	reg := rawICMPRegistry(t, obs)
	testnet.Sysctl(t, "net.ipv4.icmp_echo_ignore_all", "1")

	// On loopback a raw socket without a filter sees our own requests too: count them.
	watch, err := icmp.ListenPacket("ip4:icmp", "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	defer watch.Close()
	var mu sync.Mutex
	requests := 0
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		buf := make([]byte, 1500)
		for {
			n, _, err := watch.ReadFrom(buf)
			if err != nil {
				return
			}
			if m, err := icmp.ParseMessage(1, buf[:n]); err == nil && m.Type == ipv4.ICMPTypeEcho {
				mu.Lock()
				requests++
				mu.Unlock()
			}
		}
	}()
	defer func() { watch.Close(); <-watched }()

	silent := reg.Acquire(Target{Addr: testnet.Loopback4, Spec: icmpSpec}, "z.")
	defer silent.Release()
	<-silent.Checked()
	if silent.Up() {
		t.Fatal("up with echoes ignored")
	}
	first := obs.changeAfter(t, 0)
	if want := "icmp: no reply within " + icmpSpec.Timeout.String(); first.Err == nil || first.Err.Error() != want {
		t.Errorf("first verdict's error %v, want %s", first.Err, want)
	}
	// Tries are counted before probes, so that a probe starting between the two reads cannot
	// make either bound hold by itself. How many tries a probe gets depends on how promptly the
	// loop wakes (a late wake past the deadline sends no more), so the test waits until one
	// probe has sent more than one, with one probe at most in flight, rather than count them.
	var sent, probes int
	eventually(t, "an unanswered probe to send a second try", func() bool {
		mu.Lock()
		sent = requests
		mu.Unlock()
		probes = obs.probes()
		return sent >= probes+2
	})
	if sent > engine.MaxTries*(probes+1) {
		t.Errorf("%d echo requests for %d unanswered probes, want up to %d tries each", sent, probes, engine.MaxTries)
	}
	t.Logf("%d echo requests for %d unanswered probes", sent, probes)

	testnet.Sysctl(t, "net.ipv4.icmp_echo_ignore_all", "0")
	eventually(t, "up once echoes are answered", silent.Up)

	unrouted := netip.MustParseAddr("10.99.0.1") // the namespace has no route but loopback's
	before, _, _ := obs.count()
	l := reg.Acquire(Target{Addr: unrouted, Spec: icmpSpec}, "z.")
	defer l.Release()
	<-l.Checked()
	last := obs.changeAfter(t, before)
	if l.Up() || last.Err == nil || !errors.Is(last.Err, syscall.ENETUNREACH) {
		t.Errorf("unrouted %s: up=%v, error %v; want down with network is unreachable", unrouted, l.Up(), last.Err)
	}
}

// openFDs counts this process's open file descriptors.
func openFDs(t *testing.T) int {
	t.Helper()
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("counting open files: %v", err)
	}
	return len(fds)
}
