package healthdns

import (
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/healthdns/healthdns/event"
	"github.com/healthdns/healthdns/health"
)

// fakeLoops is a registry's loops as a test sets them.
type fakeLoops struct {
	mu    sync.Mutex
	loops []health.LoopStatus
}

func (f *fakeLoops) set(wire string, stalled bool, lastTick time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.loops = []health.LoopStatus{{Wire: wire, Running: true, Targets: 2, Stalled: stalled, LastTick: lastTick}}
}

func (f *fakeLoops) get() []health.LoopStatus {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]health.LoopStatus(nil), f.loops...)
}

func lifecycleOfZones(server string, zones map[string]health.CheckKind) *lifecycle {
	l := &lifecycle{}
	for z, kind := range zones {
		p := &zonePool{}
		p.cfg.Server, p.cfg.Zone, p.cfg.Checks = server, z, []health.Check{{Kind: kind, Port: 80}}
		l.pools = append(l.pools, p)
	}
	return l
}

// TestWatchdogStallOnce: a loop that stalls is published once as checker_stalled, for each zone
// whose checks it runs (once per zone while a reload's two instances hold it), however many
// times the watchdog looks; once it wakes, checker_recovered, once. The last release stops the
// watchdog's goroutine.
func TestWatchdogStallOnce(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	loops := &fakeLoops{}
	start := time.Now()
	loops.set("tcp_syn", false, start)
	loopOf := func(c health.Check) string {
		if c.Kind == health.TCP {
			return "tcp_syn"
		}
		return "blocking"
	}
	bus := event.NewBus("test", nil)
	sub := bus.Follow()
	defer sub.Close()
	w := newWatchdog(time.Millisecond)
	zones := map[string]health.CheckKind{"tcp.lan.": health.TCP, "http.lan.": health.HTTP}
	old, next := lifecycleOfZones("dns://:53", zones), lifecycleOfZones("dns://:53", zones)
	w.acquireWith(old, loops.get, loopOf, bus)
	w.acquireWith(next, loops.get, loopOf, bus) // a reload: both instances run
	loops.set("tcp_syn", true, start)
	e := <-sub.Events()
	if e.Kind != event.CheckerStalled || e.Zone != "tcp.lan." || e.Wire != "tcp_syn" || e.Error == "" {
		t.Errorf("first event %+v, want checker_stalled of tcp.lan. on tcp_syn", e)
	}
	w.release(old)
	time.Sleep(20 * time.Millisecond) // some looks at a loop still stalled: not published again
	loops.set("tcp_syn", false, start.Add(7*time.Second))
	e = <-sub.Events()
	if e.Kind != event.CheckerRecovered || e.Zone != "tcp.lan." || e.Seq != 2 {
		t.Errorf("second event %+v, want checker_recovered of tcp.lan., seq 2", e)
	}
	w.release(next)
	select {
	case e := <-sub.Events():
		t.Errorf("an event after the recovery: %+v", e)
	default:
	}
}
