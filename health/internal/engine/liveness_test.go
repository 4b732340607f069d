package engine

import (
	"sync"
	"testing"
	"time"
)

// stuckWire is a scriptWire whose Poll blocks while stuck is held: a loop stuck in its wire.
type stuckWire struct {
	scriptWire
	stuck sync.Mutex
	polls int // guarded by stuck
}

func (w *stuckWire) Poll() {
	w.stuck.Lock() // waits while the test holds it
	w.polls++
	w.stuck.Unlock()
	w.scriptWire.Poll()
}

// A running loop's last tick follows the clock while it wakes, and stops when it is stuck; it
// counts its targets and knows the shortest interval among them.
func TestLoopLiveness(t *testing.T) {
	w := &stuckWire{scriptWire: scriptWire{answer: func(*Slot[scriptState], int) (error, bool) { return nil, true }}}
	l := New[scriptState](w)
	if lv := l.Liveness(); lv.Running || lv.Targets != 0 || !lv.LastTick.IsZero() {
		t.Fatalf("a loop never retained: %+v", lv)
	}
	l.Retain()
	defer l.Release()
	budget := NewBudget()
	slow := target(time.Hour, 5*time.Millisecond)
	slow.Budget, slow.Report = budget, func(Result) {}
	fast := target(20*time.Millisecond, 5*time.Millisecond)
	fast.Budget, fast.Report = budget, func(Result) {}
	tickets := []Ticket{l.Schedule(slow), l.Schedule(fast)}

	before := l.Liveness()
	deadline := time.Now().Add(10 * time.Second)
	var lv Liveness
	for {
		lv = l.Liveness()
		if lv.Wakes >= before.Wakes+5 && lv.LastTick.After(before.LastTick) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the loop did not wake 5 times in 10s: %+v", lv)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if !lv.Running || lv.Targets != 2 || lv.Interval != 20*time.Millisecond {
		t.Errorf("liveness %+v: want running, 2 targets, shortest interval 20ms", lv)
	}

	w.stuck.Lock()
	stuckAt := l.Liveness().Wakes
	time.Sleep(60 * time.Millisecond) // three of the fast target's intervals: it would have woken
	stuck := l.Liveness()
	w.stuck.Unlock()
	if stuck.Wakes > stuckAt+1 { // one wake may have begun before the wire got stuck
		t.Errorf("%d wakes while the wire was stuck", stuck.Wakes-stuckAt)
	}
	if age := time.Since(stuck.LastTick); age < 50*time.Millisecond {
		t.Errorf("last tick %v ago while stuck for 60ms", age)
	}

	tickets[1].Unschedule()
	if lv := l.Liveness(); lv.Targets != 1 || lv.Interval != time.Hour {
		t.Errorf("after unscheduling the fast target: %+v, want 1 target, shortest interval 1h", lv)
	}
	tickets[0].Unschedule()
}

// The lateness p99 is of the probes the loop started: none, nothing to say.
func TestLatenessP99(t *testing.T) {
	l := New[scriptState](&scriptWire{})
	if got := l.Liveness().LatenessP99; got != 0 {
		t.Fatalf("p99 of no probe: %v", got)
	}
	for i := range 100 {
		l.lateness[i] = time.Duration(i+1) * time.Millisecond
	}
	l.lateCount = 100
	if got := l.Liveness().LatenessP99; got != 99*time.Millisecond {
		t.Errorf("p99 of 1..100ms: %v, want 99ms", got)
	}
	for i := range latenessSamples + 10 { // the ring keeps the newest
		l.lateness[i%latenessSamples] = time.Millisecond
	}
	l.lateCount = latenessSamples + 10
	if got := l.Liveness().LatenessP99; got != time.Millisecond {
		t.Errorf("p99 after the ring wrapped: %v, want 1ms", got)
	}
}

// A loop with targets wakes at least every Heartbeat, however long their intervals: its last
// tick alone tells whether it is alive.
func TestLoopHeartbeat(t *testing.T) {
	w := &scriptWire{answer: func(*Slot[scriptState], int) (error, bool) { return nil, true }}
	l := New[scriptState](w)
	l.Retain()
	defer l.Release()
	tgt := target(time.Hour, 5*time.Millisecond)
	probed := make(chan Result, 1)
	tgt.Budget, tgt.Report = NewBudget(), func(r Result) { probed <- r }
	ticket := l.Schedule(tgt)
	defer ticket.Unschedule()
	<-probed // the first probe, at once; the next is up to an hour away
	start := l.Liveness().Wakes
	deadline := time.Now().Add(10 * time.Second)
	for l.Liveness().Wakes < start+2 {
		if time.Now().After(deadline) {
			t.Fatalf("a loop whose one target probes hourly woke %d times in 10s", l.Liveness().Wakes-start)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if age := time.Since(l.Liveness().LastTick); age > 5*Heartbeat {
		t.Errorf("last tick %v ago", age)
	}
}
