package engine

import (
	"context"
	"errors"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var errRefused = errors.New("refused")

// scriptWire answers each try as its script says, at the poll after the try was flushed. Every
// method runs on the loop's goroutine but Prepare and End.
type scriptWire struct {
	// answer is asked at each try: the probe's try number (1 on), and what to answer: ok
	// false leaves the try unanswered.
	answer func(s *Slot[scriptState], try int) (err error, ok bool)

	mu      sync.Mutex // for the test's reads
	tries   int
	queued  []Answer[scriptState]
	sent    []Answer[scriptState]
	replied []Answer[scriptState]
}

type scriptState struct{ try int }

func (w *scriptWire) Prepare(*Slot[scriptState], *Target) {}
func (w *scriptWire) End(*Slot[scriptState])              {}
func (w *scriptWire) Close()                              {}

func (w *scriptWire) Try(s *Slot[scriptState], first bool) error {
	if first {
		s.State.try = 0
	}
	s.State.try++
	w.mu.Lock()
	w.tries++
	w.mu.Unlock()
	if err, ok := w.answer(s, s.State.try); ok {
		w.queued = append(w.queued, Answer[scriptState]{Slot: s, Err: err})
	}
	return nil
}

func (w *scriptWire) Flush() []Answer[scriptState] {
	w.sent = append(w.sent, w.queued...)
	w.queued = w.queued[:0]
	return nil
}

func (w *scriptWire) Poll() {
	w.replied = append(w.replied[:0], w.sent...)
	w.sent = w.sent[:0]
}

func (w *scriptWire) Answered() []Answer[scriptState] { return w.replied }

func (w *scriptWire) TimedOut(*Slot[scriptState], time.Duration) error {
	return context.DeadlineExceeded
}

func (w *scriptWire) triesSent() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.tries
}

// probeOnce schedules one target on a new loop over w and returns its first result.
func probeOnce(t *testing.T, w *scriptWire, tgt Target) Result {
	t.Helper()
	l := New[scriptState](w)
	l.Retain()
	defer l.Release()
	results := make(chan Result, 16)
	tgt.Report = func(r Result) { results <- r }
	if tgt.Budget == nil {
		tgt.Budget = NewBudget()
	}
	ticket := l.Schedule(tgt)
	defer ticket.Unschedule()
	select {
	case r := <-results:
		return r
	case <-time.After(10 * time.Second):
		t.Fatal("no result in 10s")
		return Result{}
	}
}

func target(interval, timeout time.Duration) Target {
	return Target{Addr: netip.MustParseAddr("127.0.0.1"), Interval: interval, Timeout: timeout}
}

// A probe whose first try goes unanswered sends a second a third of the timeout later, and the
// second's answer is the probe's.
func TestLoopRetriesWhileUnanswered(t *testing.T) {
	w := &scriptWire{answer: func(_ *Slot[scriptState], try int) (error, bool) { return nil, try == 2 }}
	// Seconds apart, so that a loop a busy machine wakes late still sees the second try's
	// answer before the third is due.
	const timeout = 3 * time.Second
	r := probeOnce(t, w, target(time.Hour, timeout))
	if r.Err != nil {
		t.Fatalf("probe failed: %v; the second try was answered", r.Err)
	}
	if got := w.triesSent(); got != 2 {
		t.Errorf("%d tries sent, want 2 (no third once the second answered)", got)
	}
	if r.Took < timeout/MaxTries-Tick {
		t.Errorf("probe took %v: the second try went out before a third of the timeout", r.Took)
	}
}

// A conclusive failure ends the probe at once: asking again would only get it again.
func TestLoopConclusiveFailureEndsProbe(t *testing.T) {
	w := &scriptWire{answer: func(*Slot[scriptState], int) (error, bool) { return errRefused, true }}
	r := probeOnce(t, w, target(time.Hour, 300*time.Millisecond))
	if !errors.Is(r.Err, errRefused) || w.triesSent() != 1 {
		t.Errorf("result %v after %d tries, want refused after 1", r.Err, w.triesSent())
	}
}

// A silent backend gets MaxTries tries and times out at the deadline, with the wire's error.
func TestLoopTimesOut(t *testing.T) {
	w := &scriptWire{answer: func(*Slot[scriptState], int) (error, bool) { return nil, false }}
	// Tries a second apart: a loop woken past the deadline would send fewer.
	r := probeOnce(t, w, target(time.Hour, 3*time.Second))
	if !errors.Is(r.Err, context.DeadlineExceeded) || w.triesSent() != MaxTries {
		t.Errorf("result %v after %d tries, want a timeout after %d", r.Err, w.triesSent(), MaxTries)
	}
}

// Tries bounds a probe's tries: a check that must not run twice at once (a script) sets 1.
func TestLoopOneTry(t *testing.T) {
	w := &scriptWire{answer: func(*Slot[scriptState], int) (error, bool) { return nil, false }}
	tgt := target(time.Hour, 60*time.Millisecond)
	tgt.Tries = 1
	if r := probeOnce(t, w, tgt); r.Err == nil || w.triesSent() != 1 {
		t.Errorf("result %v after %d tries, want a timeout after 1", r.Err, w.triesSent())
	}
}

// An empty budget sends no second try: the first is all the probe gets.
func TestLoopBudgetSpent(t *testing.T) {
	w := &scriptWire{answer: func(_ *Slot[scriptState], try int) (error, bool) { return nil, try == 2 }}
	b := NewBudget()
	b.tokens, b.last = 0, time.Now().Add(time.Hour) // no refill during the test
	tgt := target(time.Hour, 150*time.Millisecond)
	tgt.Budget = b
	if r := probeOnce(t, w, tgt); r.Err == nil || w.triesSent() != 1 {
		t.Errorf("result %v after %d tries, want a timeout after 1: the budget had no try to spare", r.Err, w.triesSent())
	}
}

// Targets started together probe at random phases: their second probes do not all fall in the
// same small slice of the interval.
func TestLoopSpreadsProbes(t *testing.T) {
	const interval = 200 * time.Millisecond
	w := &scriptWire{answer: func(*Slot[scriptState], int) (error, bool) { return nil, true }}
	l := New[scriptState](w)
	l.Retain()
	defer l.Release()
	start := time.Now()
	var mu sync.Mutex
	seen := map[int]bool{}
	budget := NewBudget()
	for i := range 40 {
		tgt := target(interval, 10*time.Millisecond)
		tgt.Addr = netip.AddrFrom4([4]byte{127, 0, 1, byte(i)})
		tgt.Budget = budget
		tgt.Report = func(Result) {
			mu.Lock()
			seen[int(time.Since(start)%interval/(interval/10))] = true
			mu.Unlock()
		}
		defer l.Schedule(tgt).Unschedule()
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		mu.Lock()
		n := len(seen)
		mu.Unlock()
		if n >= 4 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("probes fell in only %d tenths of the interval", n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Hurry moves a target to its Fast grid and back: while on, it is probed every Fast; off, every
// Interval again. Counted in probes, not timed: with Interval an hour, any second probe comes
// from the Fast grid.
func TestLoopHurry(t *testing.T) {
	w := &scriptWire{answer: func(*Slot[scriptState], int) (error, bool) { return nil, true }}
	l := New[scriptState](w)
	l.Retain()
	defer l.Release()
	var probes atomic.Int32
	tgt := target(time.Hour, 5*time.Millisecond)
	tgt.Fast = 20 * time.Millisecond
	tgt.Budget = NewBudget()
	tgt.Report = func(Result) { probes.Add(1) }
	ticket := l.Schedule(tgt)
	defer ticket.Unschedule()
	waitFor(t, func() bool { return probes.Load() == 1 }, "the first probe")
	ticket.Hurry(true)
	waitFor(t, func() bool { return probes.Load() >= 4 }, "three probes on the fast grid")
	ticket.Hurry(false)
	settled := probes.Load()
	time.Sleep(200 * time.Millisecond) // ten fast intervals
	if got := probes.Load(); got > settled+1 {
		t.Errorf("%d probes after Hurry(false), want at most the one in flight: back on the hour's grid", got-settled)
	}
}

func waitFor(t *testing.T, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// busyWire is a wire whose poll takes a while and notes whether two loops ever polled at once.
type busyWire struct {
	polling atomic.Int32
	overlap atomic.Bool
}

func (w *busyWire) Prepare(*Slot[struct{}], *Target)              {}
func (w *busyWire) Try(*Slot[struct{}], bool) error               { return nil }
func (w *busyWire) End(*Slot[struct{}])                           {}
func (w *busyWire) Answered() []Answer[struct{}]                  { return nil }
func (w *busyWire) Flush() []Answer[struct{}]                     { return nil }
func (w *busyWire) TimedOut(*Slot[struct{}], time.Duration) error { return nil }
func (w *busyWire) Close()                                        {}

func (w *busyWire) Poll() {
	if w.polling.Add(1) > 1 {
		w.overlap.Store(true)
	}
	time.Sleep(time.Millisecond)
	w.polling.Add(-1)
}

// A loop retained again while its last release waits for it must not run beside the new one:
// the wire's buffers belong to one loop goroutine.
func TestLoopRetainedWhileReleasing(t *testing.T) {
	w := &busyWire{}
	l := New[struct{}](w)
	tgt := target(time.Millisecond, 500*time.Microsecond) // keeps the loop waking
	tgt.Budget = NewBudget()
	tgt.Report = func(Result) {}
	l.Retain()
	ticket := l.Schedule(tgt)
	for range 200 {
		time.Sleep(500 * time.Microsecond) // let it get into a poll
		released := make(chan struct{})
		go func() { l.Release(); close(released) }()
		for l.mu.Lock(); l.users > 0; l.mu.Lock() { // retain once the release has begun
			l.mu.Unlock()
		}
		l.mu.Unlock()
		l.Retain()
		<-released
	}
	ticket.Unschedule()
	l.Release()
	if w.overlap.Load() {
		t.Error("two loops polled the wire at once")
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
	}
}
