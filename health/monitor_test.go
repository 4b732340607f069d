package health

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// switchProber answers from a flag the test flips, and counts probes.
type switchProber struct {
	fail   atomic.Bool
	probes atomic.Int64
}

func (p *switchProber) probe(ctx context.Context, _ netip.Addr) error {
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

// testSpec probes often. Its probes answer at once, so its timeout only has to outlast a busy
// machine's late goroutine: at 5ms, another go test ./... beside it made a passing probe time out.
var testSpec = Spec{Check: Check{Kind: TCP, Port: 80}, Interval: 10 * time.Millisecond, Timeout: 5 * time.Second, Rise: 2, Fall: 2}

func TestMonitorFollowsBackend(t *testing.T) {
	obs := &recorder{}
	p := &switchProber{}
	reg := NewRegistry(obs, WithProbe(p.probe))
	l := reg.Acquire(Target{Addr: netip.MustParseAddr("127.0.0.1"), Spec: testSpec}, "app.lan.")
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

// toldFirst is a recorder that notes, for each change after the first verdict, whether the
// lease already showed the new state while the change was being told.
type toldFirst struct {
	recorder
	lease atomic.Pointer[Lease]
	early atomic.Int64
}

func (o *toldFirst) Changed(t Target, c Change) {
	if l := o.lease.Load(); l != nil && !c.First && l.Up() == c.Up {
		o.early.Add(1)
	}
	o.recorder.Changed(t, c)
}

// TestChangeToldBeforeSeen: a change is told (logged) before the lease shows it, so a pool
// rebuilding for another reason cannot log what a change caused before the change's own line.
func TestChangeToldBeforeSeen(t *testing.T) {
	obs := &toldFirst{}
	p := &switchProber{}
	reg := NewRegistry(obs, WithProbe(p.probe))
	l := reg.Acquire(Target{Addr: netip.MustParseAddr("127.0.0.1"), Spec: testSpec}, "app.lan.")
	defer l.Release()
	<-l.Checked()
	obs.lease.Store(l)
	for range 3 {
		p.fail.Store(true)
		eventually(t, "down", func() bool { return !l.Up() })
		p.fail.Store(false)
		eventually(t, "up again", func() bool { return l.Up() })
	}
	if n := obs.early.Load(); n != 0 {
		t.Errorf("%d of 6 changes were visible on the lease before the observer was told of them", n)
	}
}

// TestChangeNamesOwners checks that a change names every owner holding the target at the
// time, the first verdict included (its probe may end before Acquire returns).
func TestChangeNamesOwners(t *testing.T) {
	obs := &recorder{}
	p := &switchProber{}
	reg := NewRegistry(obs, WithProbe(p.probe))
	target := Target{Addr: netip.MustParseAddr("127.0.0.1"), Spec: testSpec}
	b := reg.Acquire(target, "b.lan.")
	<-b.Checked()
	a := reg.Acquire(target, "a.lan.")
	a2 := reg.Acquire(target, "a.lan.") // a second lease of one owner names it once
	p.fail.Store(true)
	eventually(t, "down", func() bool { return !a.Up() })
	a.Release()
	b.Release()
	p.fail.Store(false)
	eventually(t, "up", func() bool { return a2.Up() })
	a2.Release()

	obs.mu.Lock()
	defer obs.mu.Unlock()
	var got []string
	for _, c := range obs.changes {
		got = append(got, fmt.Sprintf("up=%v %v", c.Up, c.Owners))
	}
	want := []string{"up=true [b.lan.]", "up=false [a.lan. b.lan.]", "up=true [a.lan.]"}
	if !slices.Equal(got, want) {
		t.Errorf("changes %q, want %q", got, want)
	}
}

func TestMonitorFirstProbeDecides(t *testing.T) {
	p := &switchProber{}
	p.fail.Store(true)
	reg := NewRegistry(&recorder{}, WithProbe(p.probe))
	l := reg.Acquire(Target{Addr: netip.MustParseAddr("127.0.0.1"), Spec: testSpec}, "z.")
	defer l.Release()
	<-l.Checked()
	if l.Up() {
		t.Fatal("up after a failed first probe")
	}
}

// slowProber blocks until its context ends, as a probe of a black-holed host does.
type slowProber struct{}

func (slowProber) probe(ctx context.Context, _ netip.Addr) error { <-ctx.Done(); return ctx.Err() }

func TestMonitorStopsPromptly(t *testing.T) {
	reg := NewRegistry(&recorder{}, WithProbe(slowProber{}.probe))
	spec := testSpec
	spec.Interval, spec.Timeout = time.Hour, 30*time.Minute
	l := reg.Acquire(Target{Addr: netip.MustParseAddr("127.0.0.1"), Spec: spec}, "z.")
	done := make(chan struct{})
	go func() { l.Release(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Release did not cancel a running probe")
	}
}

// stampedProber answers from a flag the test flips, and notes when each probe started.
type stampedProber struct {
	fail  atomic.Bool
	mu    sync.Mutex
	times []time.Time
	fails []bool
}

func (p *stampedProber) probe(context.Context, netip.Addr) error {
	failing := p.fail.Load()
	p.mu.Lock()
	p.times = append(p.times, time.Now())
	p.fails = append(p.fails, failing)
	p.mu.Unlock()
	if failing {
		return errors.New("tcp :80: connection refused")
	}
	return nil
}

// gaps returns the time between each probe and the one before it, and whether the earlier one
// failed.
func (p *stampedProber) gaps() (gaps []time.Duration, afterFailure []bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for i := 1; i < len(p.times); i++ {
		gaps = append(gaps, p.times[i].Sub(p.times[i-1]))
		afterFailure = append(afterFailure, p.fails[i-1])
	}
	return gaps, afterFailure
}

// While a result disagrees with the state, the monitor probes every Fast until rise or fall
// settles it; a settled backend is probed every Interval. With fall 3 the two probes after the
// first failure come a fast interval apart, and after the backend is down the next comes an
// interval later: the gaps tell, not the time it took.
func TestMonitorHurriesWhileInDoubt(t *testing.T) {
	p := &stampedProber{}
	reg := NewRegistry(&recorder{}, WithProbe(p.probe))
	spec := testSpec
	spec.Interval, spec.Fast, spec.Rise, spec.Fall = 400*time.Millisecond, 20*time.Millisecond, 3, 3
	l := reg.Acquire(Target{Addr: netip.MustParseAddr("127.0.0.1"), Spec: spec}, "z.")
	defer l.Release()
	<-l.Checked()
	p.fail.Store(true)
	eventually(t, "down", func() bool { return !l.Up() })
	down := len(p.times)
	eventually(t, "a probe after going down", func() bool {
		p.mu.Lock()
		defer p.mu.Unlock()
		return len(p.times) > down
	})
	gaps, afterFailure := p.gaps()
	var inDoubt, settled []time.Duration
	for i, g := range gaps {
		switch {
		case !afterFailure[i]:
		case i+1 < down:
			inDoubt = append(inDoubt, g) // the probes of the fall
		default:
			settled = append(settled, g) // from the one that took it down to the next
		}
	}
	t.Logf("gaps while in doubt %v, after settling %v", inDoubt, settled)
	if len(inDoubt) != 2 {
		t.Fatalf("%d probes after a failure before going down, want 2 (fall 3): gaps %v", len(inDoubt), gaps)
	}
	for _, g := range inDoubt {
		if g > spec.Interval/2 {
			t.Errorf("a probe in doubt came %v after the last: on the interval's grid, not the fast one", g)
		}
	}
	if len(settled) == 0 || settled[0] < spec.Interval/2 {
		t.Errorf("after going down the next probe came %v later: still hurried", settled)
	}
}
