//go:build unix

package health

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
// report to the monitor. Every method runs on the loop's goroutine.
type echoWire struct {
	queued, sent, replied []answer
}

func (w *echoWire) prepare(*scheduled) {}
func (w *echoWire) try(s *scheduled, _ bool) error {
	w.queued = append(w.queued, answer{s: s})
	return nil
}
func (w *echoWire) end(*scheduled)                           {}
func (w *echoWire) busy() bool                               { return false }
func (w *echoWire) timedOut(*scheduled, time.Duration) error { return errNoReply{} }
func (w *echoWire) close()                                   {}

func (w *echoWire) flush() []answer {
	w.sent = append(w.sent, w.queued...)
	w.queued = w.queued[:0]
	return nil
}

func (w *echoWire) poll() {
	w.replied = append(w.replied[:0], w.sent...)
	w.sent = w.sent[:0]
}

func (w *echoWire) answered() []answer { return w.replied }

// probeCounter is an Observer that counts probes and closes reached once they reach goal.
type probeCounter struct {
	n, goal atomic.Int64
	closed  atomic.Bool
	reached chan struct{}
}

func newProbeCounter() *probeCounter {
	c := &probeCounter{reached: make(chan struct{})}
	c.goal.Store(math.MaxInt64)
	return c
}

func (c *probeCounter) ProbeRecorder(Target) func(Result) {
	return func(Result) {
		if c.n.Add(1) >= c.goal.Load() && c.closed.CompareAndSwap(false, true) {
			close(c.reached)
		}
	}
}
func (c *probeCounter) Changed(Target, Change)      {}
func (c *probeCounter) Released(string, netip.Addr) {}
func (c *probeCounter) Stopped(netip.Addr, Check)   {}

// BenchmarkProbeLoop measures the CPU one probe costs the loop, wire excluded, with 10,000
// targets at 100ms (100,000 probes a second, ten times the scale goal, so that the loop's cost
// stands above the process's idle work). The figure is cpu-ns/probe: the process's CPU time over
// the run divided by the probes; ns/op is only the schedule's pace.
//
//	go test -run XXX -bench ProbeLoop -count 5 ./health
func BenchmarkProbeLoop(b *testing.B) {
	const targets = 10_000
	spec := Spec{Check: Check{Kind: ICMP}, Interval: 100 * time.Millisecond, Timeout: 50 * time.Millisecond, Rise: 2, Fall: 2}
	var l probeLoop
	l.init(&echoWire{})
	obs := newProbeCounter()
	budget := newRetryBudget()
	l.retain()
	defer l.release()
	for i := range targets {
		addr := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
		l.schedule(newMonitor(Target{Addr: addr, Spec: spec}, nil, obs, budget))
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
