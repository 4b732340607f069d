//go:build unix

package engine

import (
	"math"
	"net/netip"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// echoWire answers every try at the next poll, as an instant backend would, so that what a
// benchmark measures is the loop's own cost per probe: its schedule, its bookkeeping and its
// report. Every method runs on the loop's goroutine.
type echoWire struct {
	queued, sent, replied []Answer[struct{}]
}

func (w *echoWire) Prepare(*Slot[struct{}], *Target) {}
func (w *echoWire) Try(s *Slot[struct{}], _ bool) error {
	w.queued = append(w.queued, Answer[struct{}]{Slot: s})
	return nil
}
func (w *echoWire) End(*Slot[struct{}])                           {}
func (w *echoWire) TimedOut(*Slot[struct{}], time.Duration) error { return nil }
func (w *echoWire) Close()                                        {}

func (w *echoWire) Flush() []Answer[struct{}] {
	w.sent = append(w.sent, w.queued...)
	w.queued = w.queued[:0]
	return nil
}

func (w *echoWire) Poll() {
	w.replied = append(w.replied[:0], w.sent...)
	w.sent = w.sent[:0]
}

func (w *echoWire) Answered() []Answer[struct{}] { return w.replied }

// probeCounter counts reports and closes reached once they reach goal.
type probeCounter struct {
	n, goal atomic.Int64
	closed  atomic.Bool
	reached chan struct{}
}

func (c *probeCounter) report(Result) {
	if c.n.Add(1) >= c.goal.Load() && c.closed.CompareAndSwap(false, true) {
		close(c.reached)
	}
}

// BenchmarkProbeLoop measures the CPU one probe costs the loop, wire excluded, with 10,000
// targets at 100ms (100,000 probes a second, ten times the scale goal, so that the loop's cost
// stands above the process's idle work). The figure is cpu-ns/probe: the process's CPU time over
// the run divided by the probes; ns/op is only the schedule's pace.
//
//	go test -run XXX -bench ProbeLoop -count 5 ./health/internal/engine
func BenchmarkProbeLoop(b *testing.B) {
	const targets = 10_000
	l := New[struct{}](&echoWire{})
	obs := &probeCounter{reached: make(chan struct{})}
	obs.goal.Store(math.MaxInt64)
	budget := NewBudget()
	l.Retain()
	defer l.Release()
	for i := range targets {
		addr := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
		t := Target{Addr: addr, Interval: 100 * time.Millisecond, Timeout: 50 * time.Millisecond, Budget: budget, Report: obs.report}
		defer l.Schedule(t).Unschedule()
	}
	// The first round goes out at once; measure from the second, when the targets have their
	// phases, as in steady state.
	for obs.n.Load() < targets {
		time.Sleep(time.Millisecond)
	}
	b.ReportAllocs()
	b.ResetTimer()
	cpu0 := processCPU(b)
	obs.goal.Store(obs.n.Load() + int64(b.N))
	<-obs.reached
	cpu := processCPU(b) - cpu0
	b.StopTimer()
	b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N), "cpu-ns/probe")
}

func processCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
