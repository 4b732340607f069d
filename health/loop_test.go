package health

import (
	"sync/atomic"
	"testing"
	"time"
)

// busyWire is a wire whose poll takes a while and notes whether two loops ever polled at once.
type busyWire struct {
	polling atomic.Int32
	overlap atomic.Bool
}

func (w *busyWire) prepare(*scheduled)                       {}
func (w *busyWire) try(*scheduled, bool) error               { return nil }
func (w *busyWire) end(*scheduled)                           {}
func (w *busyWire) answered() []answer                       { return nil }
func (w *busyWire) flush() []answer                          { return nil }
func (w *busyWire) busy() bool                               { return true } // wake every tick
func (w *busyWire) timedOut(*scheduled, time.Duration) error { return nil }
func (w *busyWire) close()                                   {}

func (w *busyWire) poll() {
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
	var l probeLoop
	l.init(w)
	for range 200 {
		l.retain()
		time.Sleep(500 * time.Microsecond) // let it get into a poll
		released := make(chan struct{})
		go func() { l.release(); close(released) }()
		for l.mu.Lock(); l.users > 0; l.mu.Lock() { // retain once the release has begun
			l.mu.Unlock()
		}
		l.mu.Unlock()
		l.retain()
		<-released
		l.release()
	}
	if w.overlap.Load() {
		t.Error("two loops polled the wire at once")
	}
}
