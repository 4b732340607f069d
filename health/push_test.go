package health

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"
)

func pushSpec(ttl time.Duration, rise, fall int) Spec {
	return Spec{Rise: rise, Fall: fall}.For(Check{Kind: Push, TTL: ttl})
}

func (r *recorder) last() Change {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.changes[len(r.changes)-1]
}

// TestPushReportsDecide: reports are results, through rise and fall: the first sets the state,
// a fail with fall 1 takes the target down at once, and its output is the failure's text. The
// registry's WithProbe (which fails everything here) has no say over a push check.
func TestPushReportsDecide(t *testing.T) {
	rec := &recorder{}
	reg := NewRegistry(rec, WithProbe((&switchProber{}).failing()))
	addr := netip.MustParseAddr("127.0.16.1")
	l := reg.Acquire(Target{Addr: addr, Spec: pushSpec(time.Hour, 2, 1)}, "app.lan.")
	defer l.Release()
	if l.IsChecked() {
		t.Fatal("checked before any report")
	}
	if err := l.Report(true, "replica lag 0s"); err != nil {
		t.Fatal(err)
	}
	if !l.Up() || !l.IsChecked() {
		t.Fatal("the first pass did not set the state up")
	}
	if c := rec.last(); !c.First || c.Output != "replica lag 0s" {
		t.Fatalf("first change %+v: want first, with the report's output", c)
	}
	l.Report(false, "replica lag 93s")
	if l.Up() {
		t.Fatal("a fail report with fall 1 left the target up")
	}
	c := rec.last()
	var pushed *PushError
	if !errors.As(c.Err, &pushed) || pushed.Missed || !strings.Contains(c.Err.Error(), "replica lag 93s") || Reason(c.Err) != ReasonPushFail {
		t.Fatalf("down change %+v (reason %s): want a reported fail naming the output", c, Reason(c.Err))
	}
	l.Report(true, "caught up")
	if l.Up() {
		t.Fatal("one pass with rise 2 brought the target up")
	}
	l.Report(true, "caught up")
	if c := rec.last(); !l.Up() || !c.Up || c.Output != "caught up" || c.Streak != 2 {
		t.Fatalf("change %+v, up %v: want up after two passes, with their output", c, l.Up())
	}
}

// failing makes the prober fail every probe, for WithProbe.
func (p *switchProber) failing() func(ctx context.Context, addr netip.Addr) error {
	p.fail.Store(true)
	return p.probe
}

// TestPushLapse: reports that come well within the TTL keep the target up; once they stop, the
// TTL's lapse is a failure, repeated at the fast interval until fall takes the target down.
func TestPushLapse(t *testing.T) {
	rec := &recorder{}
	reg := NewRegistry(rec)
	addr := netip.MustParseAddr("127.0.16.2")
	spec := pushSpec(time.Second, 1, 3)
	spec.Fast = 50 * time.Millisecond
	l := reg.Acquire(Target{Addr: addr, Spec: spec}, "app.lan.")
	defer l.Release()
	for range 30 { // 1.5 s of reports every 50 ms: three TTLs, each renewed twenty times
		l.Report(true, "")
		time.Sleep(50 * time.Millisecond)
		if !l.Up() {
			t.Fatalf("down while reports came every 50 ms of a 1 s TTL: %+v", rec.last())
		}
	}
	stopped := time.Now()
	eventually(t, "the lapse to take the target down", func() bool { return !l.Up() })
	took := time.Since(stopped)
	c := rec.last()
	var pushed *PushError
	if !errors.As(c.Err, &pushed) || !pushed.Missed || pushed.Last.IsZero() || Reason(c.Err) != ReasonPushMissed || c.Streak != 3 {
		t.Fatalf("down change %+v: want three lapses after the last report", c)
	}
	// A TTL, then two fast intervals: logged, not asserted (the machine may be busy).
	t.Logf("down %s after the last report (TTL 1s, fast_interval 50ms, fall 3): %v", took, c.Err)
}

// TestPushNotForOtherChecks: a report to a probed check is refused, and changes nothing.
func TestPushNotForOtherChecks(t *testing.T) {
	rec := &recorder{}
	reg := NewRegistry(rec, WithProbe((&switchProber{}).probe))
	l := reg.Acquire(Target{Addr: netip.MustParseAddr("127.0.16.3"), Spec: testSpec}, "app.lan.")
	defer l.Release()
	<-l.Checked()
	if err := l.Report(false, "x"); !errors.Is(err, ErrNotPush) {
		t.Fatalf("report to a tcp check: %v, want ErrNotPush", err)
	}
}

// TestPushAcrossOverlap: a reload's new pool adopts the monitor with the reports it took, and
// the old pool's release does not stop its TTL; the last release does.
func TestPushAcrossOverlap(t *testing.T) {
	rec := &recorder{}
	reg := NewRegistry(rec)
	target := Target{Addr: netip.MustParseAddr("127.0.16.4"), Spec: pushSpec(200*time.Millisecond, 1, 1)}
	old := reg.Acquire(target, "app.lan.")
	old.Report(true, "")
	next := reg.Acquire(target, "app.lan.")
	old.Release()
	if !next.Up() {
		t.Fatal("the adopted monitor lost its report")
	}
	eventually(t, "the TTL to lapse on the adopted monitor", func() bool { return !next.Up() })
	next.Release()
	n, _, _ := rec.count()
	time.Sleep(500 * time.Millisecond) // two TTLs: a lapse after the release would show
	if m, _, _ := rec.count(); m != n {
		t.Fatalf("%d changes after the last release", m-n)
	}
	if err := next.Report(true, ""); err != nil || next.Up() {
		t.Fatalf("a report after the last release: %v, up %v; want it ignored", err, next.Up())
	}
}
