package healthdns

import (
	"fmt"
	"sync"
	"time"

	"github.com/healthdns/healthdns/event"
	"github.com/healthdns/healthdns/health"
)

// watchEvery is how often the watchdog looks at the probe loops: a fifth of the time after
// which a loop counts as stalled, so a stall is published within a second of its being one.
const watchEvery = health.StallAfter / 5

// watchdog publishes checker_stalled when a probe loop with targets stops waking, and
// checker_recovered when it wakes again, once each per stall, for every zone whose checks run
// on that loop. The loops are the process's, so the watchdog is too: every instance acquires
// it when it starts and releases it when it stops, and a reload, whose new instance acquires
// before the old one releases, keeps it running with what it knows (a stall that began before
// the reload ends once, after it). Its goroutine runs while some instance holds it, and its
// last Release waits for it.
type watchdog struct {
	every time.Duration

	mu      sync.Mutex
	held    map[*lifecycle]bool
	loops   func() []health.LoopStatus // the registry's, set by the first acquire
	loopOf  func(health.Check) string
	bus     *event.Bus
	stalled map[string]time.Time // by loop: since when it has not woken
	stop    chan struct{}
	done    chan struct{}
}

func newWatchdog(every time.Duration) *watchdog {
	return &watchdog{every: every, held: map[*lifecycle]bool{}, stalled: map[string]time.Time{}}
}

// acquire holds the watchdog for l, starting it if no instance held it.
func (w *watchdog) acquire(l *lifecycle, reg *health.Registry, bus *event.Bus) {
	w.acquireWith(l, reg.Loops, reg.LoopOf, bus)
}

func (w *watchdog) acquireWith(l *lifecycle, loops func() []health.LoopStatus, loopOf func(health.Check) string, bus *event.Bus) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.held[l] = true
	w.loops, w.loopOf, w.bus = loops, loopOf, bus
	if w.stop == nil {
		w.stop, w.done = make(chan struct{}), make(chan struct{})
		go w.run(w.stop, w.done)
	}
}

// release lets go of l's hold; the last one stops the watchdog and waits for it.
func (w *watchdog) release(l *lifecycle) {
	w.mu.Lock()
	delete(w.held, l)
	var stop, done chan struct{}
	if len(w.held) == 0 && w.stop != nil {
		stop, done = w.stop, w.done
		w.stop, w.done = nil, nil
		clear(w.stalled)
	}
	w.mu.Unlock()
	if stop != nil {
		close(stop)
		<-done
	}
}

func (w *watchdog) run(stop, done chan struct{}) {
	defer close(done)
	tick := time.NewTicker(w.every)
	defer tick.Stop()
	for {
		select {
		case <-stop:
			return
		case <-tick.C:
			w.look()
		}
	}
}

// look publishes the loops that stalled or recovered since the last look.
func (w *watchdog) look() {
	w.mu.Lock()
	loops, bus := w.loops, w.bus
	w.mu.Unlock()
	for _, l := range loops() {
		w.mu.Lock()
		since, was := w.stalled[l.Wire]
		switch {
		case l.Stalled && !was:
			w.stalled[l.Wire] = l.LastTick
			w.mu.Unlock()
			w.publish(bus, l.Wire, event.Event{Kind: event.CheckerStalled, Wire: l.Wire,
				Error: fmt.Sprintf("the %s probe loop has not woken for more than %s (last at %s): its %d targets keep their last state", l.Wire, health.StallAfter, l.LastTick.UTC().Format(time.RFC3339), l.Targets)})
		case !l.Stalled && was:
			delete(w.stalled, l.Wire)
			w.mu.Unlock()
			w.publish(bus, l.Wire, event.Event{Kind: event.CheckerRecovered, Wire: l.Wire,
				Error: fmt.Sprintf("the %s probe loop woke again after a stall of %s", l.Wire, l.LastTick.Sub(since).Round(time.Millisecond))})
		default:
			w.mu.Unlock()
		}
	}
}

// publish gives e to every zone of the running instances whose checks run on wire, once per
// server and zone: in a reload the old pool and the new one of a zone are one zone.
func (w *watchdog) publish(bus *event.Bus, wire string, e event.Event) {
	w.mu.Lock()
	type zoneKey struct{ server, zone string }
	seen := map[zoneKey]bool{}
	var zones []zoneKey
	for l := range w.held {
		for _, p := range l.pools {
			k := zoneKey{p.cfg.Server, p.cfg.Zone}
			if seen[k] || !w.usesLocked(p, wire) {
				continue
			}
			seen[k] = true
			zones = append(zones, k)
		}
	}
	w.mu.Unlock()
	if e.Kind == event.CheckerStalled {
		log.Errorf("%s (%d zones)", e.Error, len(zones))
	} else {
		log.Infof("%s", e.Error)
	}
	for _, k := range zones {
		e.Server, e.Zone = k.server, k.zone
		bus.Publish(e)
	}
}

func (w *watchdog) usesLocked(p *zonePool, wire string) bool {
	for _, c := range p.cfg.Checks {
		if w.loopOf(c) == wire {
			return true
		}
	}
	return false
}
