package health

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestHysteresis(t *testing.T) {
	fail := errors.New("refused")
	tests := []struct {
		name       string
		rise, fall int
		first      error
		results    []error
		want       []bool // state after each result
	}{
		{"fall 2 needs two failures", 2, 2, nil, []error{fail, nil, fail, fail}, []bool{true, true, true, false}},
		{"rise 2 needs two successes", 2, 2, fail, []error{nil, fail, nil, nil}, []bool{false, false, false, true}},
		{"fall 1 flips at once", 2, 1, nil, []error{fail, nil, nil}, []bool{false, false, true}},
		{"rise 3", 3, 1, fail, []error{nil, nil, nil}, []bool{false, false, true}},
		{"streak resets on agreement", 2, 3, nil, []error{fail, fail, nil, fail, fail, fail}, []bool{true, true, true, true, true, false}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := hysteresis{rise: tc.rise, fall: tc.fall}
			c := h.first(Result{Err: tc.first})
			if c.Up != (tc.first == nil) || !c.First {
				t.Fatalf("first verdict %+v, want up=%v", c, tc.first == nil)
			}
			for i, err := range tc.results {
				before := h.up
				c, changed := h.observe(err)
				if h.up != tc.want[i] {
					t.Fatalf("after result %d (%v): up=%v, want %v", i, err, h.up, tc.want[i])
				}
				if changed != (before != h.up) || (changed && c.Up != h.up) {
					t.Fatalf("result %d: changed=%v change=%+v, state %v→%v", i, changed, c, before, h.up)
				}
			}
		})
	}
}

// switchProber answers from a flag the test flips, and counts probes.
type switchProber struct {
	fail   atomic.Bool
	probes atomic.Int64
}

func (p *switchProber) Probe(ctx context.Context, _ netip.Addr) error {
	p.probes.Add(1)
	if p.fail.Load() {
		return errors.New("tcp :80: connection refused")
	}
	return nil
}

// recorder is an Observer that keeps what it was told.
type recorder struct {
	mu       sync.Mutex
	changes  []Change
	released []string
	stopped  []Check
	probed   int
}

func (r *recorder) ProbeRecorder(Target) func(Result) {
	return func(Result) { r.mu.Lock(); r.probed++; r.mu.Unlock() }
}
func (r *recorder) Changed(_ Target, c Change) {
	r.mu.Lock()
	r.changes = append(r.changes, c)
	r.mu.Unlock()
}
func (r *recorder) Released(owner string, _ netip.Addr) {
	r.mu.Lock()
	r.released = append(r.released, owner)
	r.mu.Unlock()
}
func (r *recorder) Stopped(_ netip.Addr, c Check) {
	r.mu.Lock()
	r.stopped = append(r.stopped, c)
	r.mu.Unlock()
}

func (r *recorder) count() (changes, released, stopped int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.changes), len(r.released), len(r.stopped)
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

var testSpec = Spec{Check: Check{Kind: TCP, Port: 80}, Interval: 10 * time.Millisecond, Timeout: 5 * time.Millisecond, Rise: 2, Fall: 2}

func TestMonitorFollowsBackend(t *testing.T) {
	obs := &recorder{}
	reg := NewRegistry(obs)
	p := &switchProber{}
	l := reg.Acquire(Target{Addr: netip.MustParseAddr("127.0.0.1"), Spec: testSpec}, p, "app.lan.")
	defer l.Release()
	<-l.Checked()
	if !l.Up() {
		t.Fatal("not up after a successful first probe")
	}
	var notified atomic.Int64
	unsub := l.Subscribe(func() { notified.Add(1) })
	defer unsub()

	p.fail.Store(true)
	eventually(t, "down", func() bool { return !l.Up() })
	p.fail.Store(false)
	eventually(t, "up again", func() bool { return l.Up() })

	obs.mu.Lock()
	defer obs.mu.Unlock()
	if len(obs.changes) != 3 {
		t.Fatalf("changes %+v, want first, down, up", obs.changes)
	}
	down, up := obs.changes[1], obs.changes[2]
	if down.Up || down.Err == nil || down.Streak != 2 || down.Need != 2 {
		t.Errorf("down change %+v", down)
	}
	if !up.Up || up.Streak != 2 {
		t.Errorf("up change %+v", up)
	}
	// The subscription may land just before the first verdict's notification.
	if n := notified.Load(); n < 2 || n > 3 {
		t.Errorf("subscriber notified %d times, want the down and up changes", n)
	}
}

func TestMonitorFirstProbeDecides(t *testing.T) {
	reg := NewRegistry(&recorder{})
	p := &switchProber{}
	p.fail.Store(true)
	l := reg.Acquire(Target{Addr: netip.MustParseAddr("127.0.0.1"), Spec: testSpec}, p, "z.")
	defer l.Release()
	<-l.Checked()
	if l.Up() {
		t.Fatal("up after a failed first probe")
	}
}

// slowProber blocks until its context ends, as a probe of a black-holed host does.
type slowProber struct{}

func (slowProber) Probe(ctx context.Context, _ netip.Addr) error { <-ctx.Done(); return ctx.Err() }

func TestMonitorStopsPromptly(t *testing.T) {
	reg := NewRegistry(&recorder{})
	spec := testSpec
	spec.Interval, spec.Timeout = time.Hour, 30*time.Minute
	l := reg.Acquire(Target{Addr: netip.MustParseAddr("127.0.0.1"), Spec: spec}, slowProber{}, "z.")
	done := make(chan struct{})
	go func() { l.Release(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Release did not cancel a running probe")
	}
}

func TestRegistrySharesAndCounts(t *testing.T) {
	obs := &recorder{}
	reg := NewRegistry(obs)
	p := &switchProber{}
	addr := netip.MustParseAddr("127.0.0.1")
	t1 := Target{Addr: addr, Spec: testSpec}
	a := reg.Acquire(t1, p, "a.lan.")
	b := reg.Acquire(t1, p, "b.lan.")
	if a.Monitor != b.Monitor || reg.Len() != 1 {
		t.Fatalf("same target gave two monitors (len %d)", reg.Len())
	}
	other := testSpec
	other.Check.Port = 81
	c := reg.Acquire(Target{Addr: addr, Spec: other}, p, "a.lan.")
	if c.Monitor == a.Monitor || reg.Len() != 2 {
		t.Fatal("a different check shared a monitor")
	}

	a.Release()
	a.Release() // twice is harmless
	if reg.Len() != 2 {
		t.Fatalf("len %d after one of two leases went", reg.Len())
	}
	if _, rel, stop := obs.count(); rel != 0 || stop != 0 {
		t.Fatalf("released %d stopped %d while a.lan. still holds the address", rel, stop)
	}
	c.Release()
	if _, rel, stop := obs.count(); rel != 1 || stop != 1 {
		t.Fatalf("released %d stopped %d, want a.lan. released and tcp :81 stopped", rel, stop)
	}
	b.Release()
	if reg.Len() != 0 {
		t.Fatalf("len %d after every lease went", reg.Len())
	}
}

func TestRegistryAdoptsStateAcrossOverlap(t *testing.T) {
	reg := NewRegistry(&recorder{})
	p := &switchProber{}
	target := Target{Addr: netip.MustParseAddr("127.0.0.1"), Spec: testSpec}
	old := reg.Acquire(target, p, "a.lan.")
	<-old.Checked()
	p.fail.Store(true)
	eventually(t, "down", func() bool { return !old.Up() })

	// A reload: the new instance acquires before the old one releases.
	reg.OpenGeneration()
	adopted := reg.Acquire(target, p, "a.lan.")
	if !adopted.IsChecked() || adopted.Up() {
		t.Fatal("the new lease did not adopt the running loop's state")
	}
	old.Release()
	reg.CommitGeneration()
	if reg.Len() != 1 {
		t.Fatalf("len %d after the overlap", reg.Len())
	}
	adopted.Release()
}

func TestRegistryAbortGenerationStopsWhatStarted(t *testing.T) {
	reg := NewRegistry(&recorder{})
	p := &switchProber{}
	kept := reg.Acquire(Target{Addr: netip.MustParseAddr("127.0.0.1"), Spec: testSpec}, p, "a.lan.")
	reg.Started(func() { t.Error("stop recorded outside a generation was called") })

	reg.OpenGeneration()
	reg.OpenGeneration() // idempotent
	var order []string
	for _, name := range []string{"first", "second"} {
		adopted := reg.Acquire(Target{Addr: netip.MustParseAddr("127.0.0.1"), Spec: testSpec}, p, "a.lan.")
		added := reg.Acquire(Target{Addr: netip.MustParseAddr("127.0.0.2"), Spec: testSpec}, p, "a.lan.")
		reg.Started(func() {
			order = append(order, name)
			adopted.Release()
			added.Release()
		})
	}
	reg.AbortGeneration()
	reg.AbortGeneration()

	if strings.Join(order, ",") != "second,first" {
		t.Fatalf("stopped %v, want each once, newest first", order)
	}
	if reg.Len() != 1 {
		t.Fatalf("len %d after abort, want only the kept target", reg.Len())
	}
	if !reg.Holds("a.lan.") || reg.Holds("b.lan.") {
		t.Fatal("Holds does not follow the kept lease")
	}

	// A committed generation is its owner's to stop.
	reg.OpenGeneration()
	reg.Started(func() { t.Error("a committed generation was stopped") })
	reg.CommitGeneration()
	reg.AbortGeneration()

	if !kept.IsChecked() {
		<-kept.Checked()
	}
	kept.Release()
	if reg.Len() != 0 || reg.Holds("a.lan.") {
		t.Fatalf("len %d at the end", reg.Len())
	}
}

func TestMonitorSpreadsProbes(t *testing.T) {
	// Targets started together probe at random phases: their second probes do not all fall in
	// the same small slice of the interval.
	reg := NewRegistry(&recorder{})
	spec := testSpec
	spec.Interval, spec.Timeout = 200*time.Millisecond, 10*time.Millisecond
	const n = 40
	times := make(chan time.Time, 4*n)
	var leases []*Lease
	for i := range n {
		addr := netip.AddrFrom4([4]byte{127, 0, 1, byte(i)})
		leases = append(leases, reg.Acquire(Target{Addr: addr, Spec: spec}, stampProber{times}, "z."))
	}
	seen := map[int]bool{}
	deadline := time.After(10 * time.Second)
	start := time.Now()
	for len(seen) < 4 {
		select {
		case at := <-times:
			seen[int(at.Sub(start)%spec.Interval/(spec.Interval/10))] = true
		case <-deadline:
			t.Fatalf("probes fell in only %d tenths of the interval", len(seen))
		}
	}
	for _, l := range leases {
		l.Release()
	}
}

func TestGridSkipsOverrunIntervals(t *testing.T) {
	// A probe that overran its interval, or a loop that woke late, does not make up the probes
	// it missed in a burst: the next one is the first point of the grid after now.
	const i = time.Second
	for _, c := range []struct{ last, now, want time.Duration }{
		{last: 0, now: 300 * time.Millisecond, want: i},
		{last: 0, now: i - 1, want: i},
		{last: 0, now: i, want: 2 * i},
		{last: 0, now: 2*i + 500*time.Millisecond, want: 3 * i},
		{last: 250 * time.Millisecond, now: 5 * i, want: 5*i + 250*time.Millisecond},
	} {
		if got := gridAfter(c.last, i, c.now); got != c.want {
			t.Errorf("gridAfter(%v, %v, %v) = %v, want %v", c.last, i, c.now, got, c.want)
		}
		epoch := time.Now()
		if got := nextOnGrid(epoch.Add(c.last), i, epoch.Add(c.now)); !got.Equal(epoch.Add(c.want)) {
			t.Errorf("nextOnGrid(%v, %v, %v) = %v after, want %v", c.last, i, c.now, got.Sub(epoch), c.want)
		}
	}
}

type stampProber struct{ times chan<- time.Time }

func (s stampProber) Probe(context.Context, netip.Addr) error {
	select {
	case s.times <- time.Now():
	default:
	}
	return nil
}

func TestRegistrySharesOneRawICMPProber(t *testing.T) {
	reg := NewRegistry(&recorder{})
	a, _ := reg.Prober(Check{Kind: ICMP}, true)
	b, _ := reg.Prober(Check{Kind: ICMP}, true)
	if _, ok := a.(*RawICMPProber); !ok || a != b {
		t.Fatalf("privileged ICMP probers %T %p and %p: want one shared *RawICMPProber", a, a, b)
	}
	if other, _ := NewRegistry(&recorder{}).Prober(Check{Kind: ICMP}, true); other == a {
		t.Fatal("two registries share a prober")
	}
	if p, _ := reg.Prober(Check{Kind: ICMP}, false); p == a {
		t.Fatal("an unprivileged check got the raw prober")
	}
	if p, err := reg.Prober(Check{Kind: TCP, Port: 80}, true); err != nil || p == a {
		t.Fatalf("a TCP check got %T, %v", p, err)
	}
}
