package health

import (
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/healthdns/healthdns/health/internal/engine"
)

// A monitor's status follows its results: consecutive counts, the last failure, since when it
// is in its state, and its transitions, oldest first.
func TestMonitorStatus(t *testing.T) {
	p := &switchProber{}
	reg := NewRegistry(&recorder{}, WithProbe(p.probe))
	target := Target{Addr: netip.MustParseAddr("127.0.0.1"), Spec: testSpec}
	l := reg.Acquire(target, "app.lan.")
	defer l.Release()
	<-l.Checked()
	st := l.Status()
	if !st.Checked || !st.Up || st.Target != target || st.LastFailure != nil || st.Transitions != 0 {
		t.Fatalf("after a passing first probe: %+v", st)
	}
	if len(st.History) != 1 || !st.History[0].First || !st.History[0].Up || !st.Since.Equal(st.History[0].At) {
		t.Fatalf("history after the first verdict: %+v (since %v)", st.History, st.Since)
	}

	p.fail.Store(true)
	eventually(t, "down", func() bool { return !l.Up() })
	eventually(t, "three failures in a row", func() bool { return l.Status().Failures >= 3 })
	st = l.Status()
	if st.Up || st.Successes != 0 || st.Transitions != 1 || len(st.History) != 2 {
		t.Fatalf("after going down: %+v", st)
	}
	down := st.History[1]
	if down.Up || down.First || down.Err == nil || Reason(down.Err) != "error" {
		t.Errorf("the down transition: %+v", down)
	}
	if st.LastFailure == nil || st.LastFailure.Error() != "tcp :80: connection refused" || st.LastFailureAt.Before(down.At) {
		t.Errorf("last failure %v at %v, after going down at %v", st.LastFailure, st.LastFailureAt, down.At)
	}
	if !st.Since.Equal(down.At) || st.LastCheck.Before(st.Since) || st.LastDuration <= 0 {
		t.Errorf("since %v, last check %v took %v", st.Since, st.LastCheck, st.LastDuration)
	}
}

// The history keeps the last HistoryLen changes, oldest first, and the count goes on.
func TestStatusHistoryRing(t *testing.T) {
	var s status
	start := time.Unix(1000, 0)
	s.changed(Change{Up: true, First: true}, start)
	for i := 1; i <= HistoryLen+5; i++ {
		up := i%2 == 0
		var err error
		if !up {
			err = errors.New("down")
		}
		s.changed(Change{Up: up, Err: err}, start.Add(time.Duration(i)*time.Second))
	}
	m := &Monitor{status: s}
	st := m.Status()
	if st.Transitions != HistoryLen+5 {
		t.Errorf("%d transitions, want %d", st.Transitions, HistoryLen+5)
	}
	if len(st.History) != HistoryLen {
		t.Fatalf("%d in the history, want %d", len(st.History), HistoryLen)
	}
	for i, tr := range st.History {
		want := start.Add(time.Duration(i+6) * time.Second) // the first verdict and changes 1-5 fell out
		if !tr.At.Equal(want) {
			t.Fatalf("history[%d] at %v, want %v (oldest first)", i, tr.At, want)
		}
	}
}

// A registry lists the loops it made; one with targets that does not wake is stalled.
func TestRegistryLoops(t *testing.T) {
	p := &switchProber{}
	reg := NewRegistry(&recorder{}, WithProbe(p.probe))
	if loops := reg.Loops(); len(loops) != 0 {
		t.Fatalf("loops of an empty registry: %+v", loops)
	}
	l := reg.Acquire(Target{Addr: netip.MustParseAddr("127.0.0.1"), Spec: testSpec}, "app.lan.")
	<-l.Checked()
	loops := reg.Loops()
	if len(loops) != 1 {
		t.Fatalf("loops: %+v, want the blocking one", loops)
	}
	lp := loops[0]
	if lp.Wire != "blocking" || !lp.Running || lp.Targets != 1 || lp.Interval != testSpec.Interval || lp.Stalled || time.Since(lp.LastTick) > time.Minute {
		t.Errorf("the loop: %+v", lp)
	}
	l.Release()
	if lp := reg.Loops()[0]; lp.Running || lp.Targets != 0 || lp.Stalled {
		t.Errorf("the loop after the last release: %+v", lp)
	}
}

func TestStalled(t *testing.T) {
	now := time.Unix(1000, 0)
	for _, c := range []struct {
		name string
		lv   engine.Liveness
		want bool
	}{
		{"ticked just now", engine.Liveness{Running: true, Targets: 1, Interval: time.Second, LastTick: now}, false},
		{"silent for a few heartbeats", engine.Liveness{Running: true, Targets: 1, Interval: time.Minute, LastTick: now.Add(-StallAfter + time.Second)}, false},
		{"silent past StallAfter", engine.Liveness{Running: true, Targets: 1, Interval: time.Minute, LastTick: now.Add(-StallAfter - time.Second)}, true},
		{"no target: it sleeps", engine.Liveness{Running: true, Interval: time.Second, LastTick: now.Add(-time.Hour)}, false},
		{"not running", engine.Liveness{Targets: 1, Interval: time.Second, LastTick: now.Add(-time.Hour)}, false},
	} {
		if got := stalled(c.lv, now); got != c.want {
			t.Errorf("%s: stalled %v, want %v", c.name, got, c.want)
		}
	}
}
