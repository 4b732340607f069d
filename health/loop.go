package health

import (
	"math/rand/v2"
	"net/netip"
	"sync"
	"time"
)

// probeLoop probes the targets of many monitors from one goroutine, through a wire that sends
// without waiting and collects answers in batches: raw ICMP echo (RawICMPProber), raw TCP SYNs
// (halfOpenProber) and TCP connects through epoll (tcpConnector). A goroutine, a timer and a
// context per probe cost more than the probe's packets did: at 10,000 targets they were most of
// the prober's CPU, taken from the query path, and TCP at that size fell behind its own
// schedule (bench/RESULTS.md).
//
// The loop keeps every target's next event (its next probe, its probe's next try, or its
// deadline) on a timing wheel, wakes at most once per loopTick, and then collects answers,
// handles every event that is due, flushes what the wire queued, and reports to the monitors.
// A target is probed at once when scheduled, so the first answer is already true, and then
// every interval at a random phase, so that targets started together do not probe together
// (as Monitor.run).
//
// The loop, and whatever its wire holds open, exist while some monitor or caller retains it.
type probeLoop struct {
	wire  wire
	epoch time.Time // of the events' times

	mu       sync.Mutex // guards the loop's state below and the wire's
	users    int
	targets  map[*Monitor]*scheduled
	events   wheel     // every target's next event, and stale ones
	byID     []idPlace // targets by scheduled.id, for the events
	freeIDs  []uint32  // places in byID that no target holds
	inFlight int       // probes awaiting an answer
	wake     chan struct{}
	quit     chan struct{} // closed by the last release: the loop returns
	done     chan struct{} // closed when the loop has returned

	reports []report // the loop goroutine's, reused at every wake
}

// wire is how a probeLoop probes. Its methods marked "locked" run under the loop's mutex; the
// others run on the loop's goroutine outside it.
type wire interface {
	// prepare fills in what the wire keeps of a newly scheduled target (locked).
	prepare(s *scheduled)
	// try starts one try of s's probe, the probe's first if first (locked). It may only queue
	// it for flush. An error ends the probe at once with that error.
	try(s *scheduled, first bool) error
	// end forgets s's probe: the probe is over, or its target unscheduled (locked).
	end(s *scheduled)
	// poll takes in what has arrived since the last poll, without waiting.
	poll()
	// answered matches what poll took in to the probes in flight (locked): err is nil for an
	// answer, or a conclusive failure (a refused connection). A probe may appear twice.
	answered() []answer
	// flush sends what try queued, and returns the tries the kernel refused.
	flush() []answer
	// busy reports whether the wire awaits answers outside the loop's probes (locked).
	busy() bool
	// timedOut is the error of s's probe when no try was answered within took (locked).
	timedOut(s *scheduled, took time.Duration) error
	// close releases what the wire holds open, after the loop has returned (locked).
	close()
}

type answer struct {
	s   *scheduled
	err error
}

// idPlace is a target's place in probeLoop.byID. Its generation counts the events queued for
// the place: only the last one is the target's next event.
type idPlace struct {
	s   *scheduled // nil when free
	gen uint32
}

type report struct {
	m *Monitor
	r Result
}

// scheduled is one target the loop probes, with its probe in flight if any.
type scheduled struct {
	m    *Monitor
	addr netip.Addr // unmapped
	// Copied from m, so that an event reads this object alone: at 10,000 targets the first
	// read of an object is a cache miss, and the monitor's was a seventh of the loop's time
	// (BenchmarkProbeLoop's profile).
	interval, timeout time.Duration
	budget            *retryBudget
	// Times are durations since the loop's epoch: a time.Time is three words, one of them a
	// pointer, and this object is read at every event.
	due      time.Duration // next probe, on the target's grid
	sent     time.Duration // the first try of the probe in flight
	deadline time.Duration
	nextTry  time.Duration
	id       uint32 // place in probeLoop.byID
	tries    int32
	inFlight bool
	phased   bool // the first probe is done and the target is on its random phase

	echo echoTarget // RawICMPProber's
	tcp  tcpTarget  // tcpConnector's
	syn  synTarget  // halfOpenProber's
}

// loopTick bounds how often the loop wakes: every event due within one tick is handled in
// the same wake. It is also the granularity of the measured round trip and the most a probe's
// send or timeout is delayed.
const loopTick = time.Millisecond

func (l *probeLoop) init(w wire) {
	l.wire = w
	l.epoch = time.Now()
	l.targets = map[*Monitor]*scheduled{}
}

// schedule starts probing m's target: once at once, then every interval at a random phase.
func (l *probeLoop) schedule(m *Monitor) {
	now := time.Now()
	s := &scheduled{
		m:        m,
		addr:     m.target.Addr.Unmap(),
		interval: m.target.Spec.Interval,
		timeout:  m.target.Spec.Timeout,
		budget:   m.budget,
	}
	l.mu.Lock()
	l.wire.prepare(s)
	if n := len(l.freeIDs); n > 0 {
		s.id = l.freeIDs[n-1]
		l.freeIDs = l.freeIDs[:n-1]
		l.byID[s.id].s = s
	} else {
		s.id = uint32(len(l.byID))
		l.byID = append(l.byID, idPlace{s: s})
	}
	l.targets[m] = s
	s.due = l.since(now)
	l.queueLocked(s, s.due)
	l.mu.Unlock()
	l.poke()
}

// unschedule stops probing m's target. After it returns the loop starts no probe of it and
// reports no result for it, except one it had already taken out (Monitor.stop handles that).
func (l *probeLoop) unschedule(m *Monitor) {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := l.targets[m]
	if s == nil {
		return
	}
	delete(l.targets, m)
	l.endLocked(s)
	if len(l.targets) == 0 { // and so every event is stale
		l.events.reset()
		l.byID, l.freeIDs = nil, nil
		return
	}
	place := &l.byID[s.id]
	place.s = nil
	place.gen++ // s's events are stale
	l.freeIDs = append(l.freeIDs, s.id)
}

// queueLocked makes at (since the epoch: due, the next try, or the deadline) s's next event,
// and any earlier one stale.
func (l *probeLoop) queueLocked(s *scheduled, at time.Duration) {
	place := &l.byID[s.id]
	place.gen++
	l.events.add(wheelEvent{at: int64(at), id: s.id, gen: place.gen})
}

// endLocked ends s's probe in flight, if any.
func (l *probeLoop) endLocked(s *scheduled) {
	if s.inFlight {
		l.wire.end(s)
		s.inFlight = false
		l.inFlight--
	}
}

func (l *probeLoop) since(t time.Time) time.Duration { return t.Sub(l.epoch) }

// poke tells the loop that its schedule changed.
func (l *probeLoop) poke() {
	l.mu.Lock()
	wake := l.wake
	l.mu.Unlock()
	if wake != nil {
		select {
		case wake <- struct{}{}:
		default:
		}
	}
}

func (l *probeLoop) retain() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.users++
	if l.users == 1 {
		// A release may still be waiting for the last loop to return; the new one waits
		// too, since the wire's buffers are the loop goroutine's.
		previous := l.done
		l.wake = make(chan struct{}, 1)
		l.quit = make(chan struct{})
		l.done = make(chan struct{})
		go l.run(previous, l.wake, l.quit, l.done)
	}
}

// release ends the loop, and closes what the wire holds, when the last user stops.
func (l *probeLoop) release() {
	l.mu.Lock()
	l.users--
	if l.users > 0 {
		l.mu.Unlock()
		return
	}
	close(l.quit)
	done := l.done
	l.mu.Unlock()
	<-done
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.users > 0 {
		return // retained again meanwhile: a new loop runs on what the wire holds
	}
	l.wire.close()
	l.wake = nil
}

// run is the loop: take in the answers that came, handle the events that are due, flush,
// report, sleep until the next event (no sooner than a tick away).
func (l *probeLoop) run(previous, wake, quit <-chan struct{}, done chan<- struct{}) {
	defer close(done)
	if previous != nil {
		<-previous
	}
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		l.wire.poll()
		now := l.since(time.Now())
		l.mu.Lock()
		for _, a := range l.wire.answered() {
			if a.s.inFlight { // not when an earlier answer in the batch ended its probe
				l.finishLocked(a.s, now, a.err)
			}
		}
		l.dueLocked(now)
		next := time.Duration(-1) // no event: sleep until poked
		if l.inFlight > 0 || l.wire.busy() {
			next = loopTick // answers are taken in at the next wake
		}
		if at, ok := l.events.next(); ok {
			if d := max(time.Duration(at)-now, loopTick); next < 0 || d < next {
				next = d
			}
		}
		l.mu.Unlock()

		if failed := l.wire.flush(); len(failed) > 0 {
			l.refused(failed)
		}
		for _, rep := range l.reports {
			rep.m.record(rep.r)
		}
		clear(l.reports)
		l.reports = l.reports[:0]

		if next >= 0 {
			timer.Reset(next)
		} else {
			timer.Stop()
		}
		select {
		case <-quit:
			return
		case <-wake:
		case <-timer.C:
		}
	}
}

// refused ends the probes whose tries the kernel refused to send (no route, say) with that
// error at once, as a refused connection ends a TCP probe.
func (l *probeLoop) refused(failed []answer) {
	now := l.since(time.Now())
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, a := range failed {
		if l.targets[a.s.m] == a.s && a.s.inFlight { // not unscheduled meanwhile
			l.finishLocked(a.s, now, a.err)
		}
	}
}

// finishLocked reports s's probe and puts s back on its grid. now is since the epoch.
func (l *probeLoop) finishLocked(s *scheduled, now time.Duration, err error) {
	l.endLocked(s)
	l.reports = append(l.reports, report{s.m, Result{Took: now - s.sent, Late: max(s.sent-s.due, 0), Err: err}})
	if !s.phased {
		s.phased = true // the first probe was at once; the grid starts at a random phase
		s.due += time.Duration(rand.Int64N(int64(s.interval))) - s.interval
	}
	s.due = gridAfter(s.due, s.interval, now)
	l.queueLocked(s, s.due)
}

// dueLocked handles every event due by now (since the epoch): a probe to start, a try to
// repeat, a deadline.
func (l *probeLoop) dueLocked(now time.Duration) {
	l.events.expire(int64(now), func(e wheelEvent) {
		if place := l.byID[e.id]; place.s != nil && place.gen == e.gen {
			l.handleLocked(place.s, now)
		}
	})
}

// handleLocked handles s's next event, which is due.
func (l *probeLoop) handleLocked(s *scheduled, now time.Duration) {
	switch {
	case s.inFlight && now >= s.deadline:
		l.finishLocked(s, now, l.wire.timedOut(s, now-s.sent))
	case s.inFlight:
		// The next try: paid from the budget the registry's monitors share, so an
		// overloaded prober does not multiply its own load.
		if s.tries < probeAttempts && s.budget.withdraw() {
			s.tries++
			if err := l.wire.try(s, false); err != nil {
				l.finishLocked(s, now, err)
				return
			}
		}
		s.nextTry += s.timeout / probeAttempts
		if s.tries < probeAttempts && s.nextTry < s.deadline {
			l.queueLocked(s, s.nextTry)
		} else {
			l.queueLocked(s, s.deadline)
		}
	default:
		s.budget.deposit()
		s.inFlight = true
		l.inFlight++
		s.sent, s.tries = now, 1
		s.deadline = now + s.timeout
		s.nextTry = now + s.timeout/probeAttempts
		if err := l.wire.try(s, true); err != nil {
			l.finishLocked(s, now, err)
			return
		}
		l.queueLocked(s, s.nextTry)
	}
}

// retainer is a Prober holding resources that its monitors keep open while they run.
type retainer interface {
	retain()
	release()
}

// scheduler is a Prober that runs its monitors' probes itself instead of a goroutine per
// monitor. It calls Monitor.record with each result.
type scheduler interface {
	retainer
	schedule(m *Monitor)
	unschedule(m *Monitor)
}
