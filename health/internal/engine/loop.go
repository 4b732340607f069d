// Package engine is the schedule that every health check runs on: one loop per wire, which
// probes each target at once and then on its grid of intervals, sends a probe's later tries while
// the earlier ones have no answer, ends a probe at its deadline, and reports each result. It
// knows nothing of sockets or checks: a Wire sends the tries and says which were answered.
package engine

import (
	"context"
	"math/rand/v2"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Result is the outcome of one probe.
type Result struct {
	Took time.Duration // how long the probe ran
	Late time.Duration // how far after its scheduled time it started
	Err  error         // nil when the backend answered
}

// MaxTries is how many tries one probe may make within its timeout. A probe is one exchange
// (echo request and reply, SYN and SYN-ACK, a request and its response), and one lost packet
// would fail it: on a link losing 30% of packets, a third of all probes, and with fall 2 a flap
// every dozen intervals. TCP retransmits its SYN only after a second, past any useful timeout,
// so the loop retransmits itself: a new try every timeout/MaxTries while none has answered, each
// allowed to run until the deadline, as fping's retries do. On a healthy LAN the first try
// answers in well under timeout/3 and no second packet is ever sent.
const MaxTries = 3

// Target is what the loop needs to probe one address.
type Target struct {
	Addr     netip.Addr
	Port     uint16        // for the wires that connect to a port
	Interval time.Duration // between probes
	Fast     time.Duration // between probes while Hurry is on; 0: never faster than Interval
	Timeout  time.Duration // of a probe, all its tries included
	Tries    int           // tries per probe, 1 to MaxTries; 0 is MaxTries
	Budget   *Budget       // pays for every try after a probe's first
	Report   func(Result)  // called with each probe's result, on the loop's goroutine
	// Run is what a blocking wire runs for each try: it returns nil when the backend passed,
	// and must return by the time ctx is done; Name is the check in its errors ("http :80").
	// Other wires leave both unused.
	Run  func(ctx context.Context, addr netip.Addr) error
	Name string
	// Turns, when set, bound how many of the tries sharing them run at once: the wire holds
	// the try back until it has a turn and then says so (Answer.Started), and the probe's
	// timeout counts from then. The probe waits as long as that takes, and gets one try.
	// Blocking wires only.
	Turns *Turns
}

// Wire is how a Loop probes: it sends tries without waiting for them and collects answers in
// batches. Its methods marked "locked" run under the loop's mutex; the others run on the loop's
// goroutine outside it. A wire serves one loop.
type Wire[S any] interface {
	// Prepare fills in what the wire keeps of a newly scheduled target (locked).
	Prepare(s *Slot[S], t *Target)
	// Try starts one try of s's probe, the probe's first if first (locked). It may only queue
	// it for Flush. An error ends the probe at once with that error.
	Try(s *Slot[S], first bool) error
	// End forgets s's probe: the probe is over, or its target unscheduled (locked).
	End(s *Slot[S])
	// Poll takes in what has arrived since the last poll, without waiting.
	Poll()
	// Answered matches what Poll took in to the probes in flight (locked): Err is nil for an
	// answer, or a conclusive failure (a refused connection). A probe may appear twice.
	Answered() []Answer[S]
	// Flush sends what Try queued, and returns the tries that could not be sent.
	Flush() []Answer[S]
	// TimedOut is the error of s's probe when no try was answered within took (locked).
	TimedOut(s *Slot[S], took time.Duration) error
	// Close releases what the wire holds open, after the loop has returned (locked).
	Close()
}

// Answer is the outcome of a try, from a wire.
type Answer[S any] struct {
	Slot *Slot[S]
	Err  error
	// Started, when not zero, says instead that the try of a target with Turns got its turn
	// then, and began: its probe's timeout counts from it.
	Started time.Time
}

// Ticket is a scheduled target, as its owner holds it.
type Ticket interface {
	// Unschedule stops probing the target. After it returns the loop starts no probe of it
	// and reports no result for it, except one it had already taken out.
	Unschedule()
	// Hurry probes the target every Fast instead of every Interval while on.
	Hurry(on bool)
}

// Scheduler is a loop as its owners see it, whatever its wire.
type Scheduler interface {
	// Retain keeps the loop, and what its wire holds open, running until the matching Release.
	Retain()
	Release()
	// Schedule starts probing t: once at once, then every interval at a random phase.
	Schedule(t Target) Ticket
	// Liveness says how the loop itself is doing.
	Liveness() Liveness
}

// Loop probes the targets of one wire from one goroutine. A goroutine, a timer and a context
// per probe cost more than the probe's packets did: at 10,000 targets they were most of the
// prober's CPU, taken from the query path, and TCP at that size fell behind its own schedule
// (bench/RESULTS.md, 2026-10).
//
// The loop keeps every target's next event (its next probe, its probe's next try, or its
// deadline) on a timing wheel, wakes at most once per Tick, and then collects answers, handles
// every event that is due, flushes what the wire queued, and reports. A target is probed at once
// when scheduled, so the first answer is already true, and then every interval at a random
// phase, so that targets started together do not probe together.
//
// The loop, and whatever its wire holds open, exist while someone retains it.
type Loop[S any] struct {
	wire  Wire[S]
	epoch time.Time // of the events' times
	// wake is the running loop goroutine's; atomic, so that a wire's goroutines can wake it
	// without the mutex, which the wire's Close holds while it waits for them.
	wake atomic.Pointer[chan struct{}]

	mu       sync.Mutex // guards the loop's state below and the wire's
	users    int
	count    int           // targets scheduled
	events   wheel         // every target's next event, and stale ones
	byID     []idPlace[S]  // targets by Slot.id, for the events
	freeIDs  []uint32      // places in byID that no target holds
	inFlight int           // probes awaiting an answer
	quit     chan struct{} // closed by the last release: the loop returns
	done     chan struct{} // closed when the loop has returned

	reports []report // the loop goroutine's, reused at every wake

	// Liveness, for a status page and an alert on a stalled checker: the loop's own health,
	// which no probe result shows (a stuck loop reports nothing, so its targets keep their
	// last state). Written at every wake, read rarely.
	lastWake  atomic.Int64                   // Unix nanoseconds of the last wake
	wakes     atomic.Uint64                  // wakes since New
	intervals map[time.Duration]int          // targets per interval, for the shortest (mu)
	lateness  [latenessSamples]time.Duration // of the last probes started, a ring (mu)
	lateCount int                            // probes started, the ring's next place (mu)
}

// latenessSamples is how many probes' lateness a loop keeps for its p99: enough that the 99th
// percentile is not the maximum, few enough that a read sorts them in microseconds.
const latenessSamples = 512

// idPlace is a target's place in Loop.byID. Its generation counts the events queued for the
// place: only the last one is the target's next event.
type idPlace[S any] struct {
	s   *Slot[S] // nil when free
	gen uint32
}

type report struct {
	to func(Result)
	r  Result
}

// Slot is one target the loop probes, with its probe in flight if any, and the wire's state of
// it (State) inline: at 10,000 targets the first read of an object is a cache miss, so an event
// reads this one object alone, and a target costs one allocation.
type Slot[S any] struct {
	Addr  netip.Addr // unmapped
	State S          // the wire's

	loop     *Loop[S]
	report   func(Result)
	budget   *Budget
	interval time.Duration
	fast     time.Duration
	timeout  time.Duration
	// Times are durations since the loop's epoch: a time.Time is three words, one of them a
	// pointer, and this object is read at every event.
	due       time.Duration // next probe, on the target's grid
	sent      time.Duration // the first try of the probe in flight
	deadline  time.Duration
	nextTry   time.Duration
	id        uint32 // place in Loop.byID
	tries     int32
	maxTries  int32
	inFlight  bool
	turns     bool // its try waits for a turn, and its deadline is set when it starts
	waiting   bool // its probe in flight waits for a turn: no deadline yet
	phased    bool // the first probe is done and the target is on its random phase
	hurried   bool // on the Fast grid
	scheduled bool // until Unschedule
}

// Tick bounds how often a loop wakes: every event due within one tick is handled in the same
// wake. It is also the granularity of the measured round trip and the most a probe's send or
// timeout is delayed.
const Tick = time.Millisecond

// Heartbeat is the longest a loop with targets sleeps, whatever their intervals, so that its
// last wake (Liveness.LastTick, and the metric made of it) tells a stuck loop from a patient one
// without knowing the intervals: a wake with nothing due costs a few microseconds.
const Heartbeat = time.Second

// New returns a loop over w. It runs once retained.
func New[S any](w Wire[S]) *Loop[S] {
	return &Loop[S]{wire: w, epoch: time.Now(), intervals: map[time.Duration]int{}}
}

// Liveness is how a loop itself is doing, apart from what it probes.
type Liveness struct {
	Running  bool
	Targets  int
	Interval time.Duration // the shortest interval of its targets
	LastTick time.Time     // the last wake; zero before the first
	Wakes    uint64
	// LatenessP99 is the 99th percentile of how late the last probes (up to 512) started
	// after their scheduled time: a loop that falls behind its schedule shows it here first.
	LatenessP99 time.Duration
}

// Liveness returns how the loop is doing now.
func (l *Loop[S]) Liveness() Liveness {
	l.mu.Lock()
	lv := Liveness{Running: l.users > 0, Targets: l.count}
	for iv := range l.intervals {
		if lv.Interval == 0 || iv < lv.Interval {
			lv.Interval = iv
		}
	}
	n := min(l.lateCount, latenessSamples)
	samples := make([]time.Duration, n)
	copy(samples, l.lateness[:n])
	l.mu.Unlock()
	if ns := l.lastWake.Load(); ns != 0 {
		lv.LastTick = time.Unix(0, ns)
	}
	lv.Wakes = l.wakes.Load()
	if n > 0 {
		slices.Sort(samples)
		lv.LatenessP99 = samples[(n*99+99)/100-1]
	}
	return lv
}

// Stats is what a loop holds at one moment.
type Stats struct {
	Targets  int // scheduled
	Events   int // on the wheel, stale ones included
	InFlight int // probes awaiting an answer
	Running  bool
}

// Stats returns what the loop holds now.
func (l *Loop[S]) Stats() Stats {
	l.mu.Lock()
	defer l.mu.Unlock()
	return Stats{Targets: l.count, Events: l.events.size, InFlight: l.inFlight, Running: l.users > 0}
}

// Timeout is the target's probe timeout, as configured: what a timed-out probe's error names.
func (s *Slot[S]) Timeout() time.Duration { return s.timeout }

// Deadline is when s's probe in flight times out.
func (s *Slot[S]) Deadline() time.Time { return s.loop.epoch.Add(s.deadline) }

// Poke wakes s's loop, for a wire whose answers arrive outside Poll (a blocking wire's tries).
func (s *Slot[S]) Poke() { s.loop.poke() }

// Unschedule implements Ticket.
func (s *Slot[S]) Unschedule() { s.loop.unschedule(s) }

// Hurry implements Ticket.
func (s *Slot[S]) Hurry(on bool) { s.loop.hurry(s, on) }

// Schedule implements Scheduler.
func (l *Loop[S]) Schedule(t Target) Ticket {
	now := time.Now()
	s := &Slot[S]{
		Addr:      t.Addr.Unmap(),
		loop:      l,
		report:    t.Report,
		budget:    t.Budget,
		interval:  t.Interval,
		fast:      t.Fast,
		timeout:   t.Timeout,
		maxTries:  int32(MaxTries),
		turns:     t.Turns != nil,
		scheduled: true,
	}
	if t.Tries > 0 && t.Tries < MaxTries {
		s.maxTries = int32(t.Tries)
	}
	if s.turns {
		s.maxTries = 1 // a second try would wait for a turn beside the first
	}
	l.mu.Lock()
	l.wire.Prepare(s, &t)
	if n := len(l.freeIDs); n > 0 {
		s.id = l.freeIDs[n-1]
		l.freeIDs = l.freeIDs[:n-1]
		l.byID[s.id].s = s
	} else {
		s.id = uint32(len(l.byID))
		l.byID = append(l.byID, idPlace[S]{s: s})
	}
	l.count++
	l.intervals[s.interval]++
	s.due = l.since(now)
	l.queueLocked(s, s.due)
	l.mu.Unlock()
	l.poke()
	return s
}

func (l *Loop[S]) unschedule(s *Slot[S]) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !s.scheduled {
		return
	}
	s.scheduled = false
	l.count--
	if l.intervals[s.interval]--; l.intervals[s.interval] <= 0 {
		delete(l.intervals, s.interval)
	}
	l.endLocked(s)
	if l.count == 0 { // and so every event is stale
		l.events.reset()
		l.byID, l.freeIDs = nil, nil
		return
	}
	place := &l.byID[s.id]
	place.s = nil
	place.gen++ // s's events are stale
	l.freeIDs = append(l.freeIDs, s.id)
}

// hurry moves s to the Fast grid or back. A probe in flight finishes first; one that is waiting
// moves to the new grid from its last probe, so a doubt is settled a fast interval after it
// arose rather than a whole interval later.
func (l *Loop[S]) hurry(s *Slot[S], on bool) {
	l.mu.Lock()
	if !s.scheduled || s.fast <= 0 || s.hurried == on {
		l.mu.Unlock()
		return
	}
	before := s.step()
	s.hurried = on
	if s.inFlight || !s.phased {
		l.mu.Unlock()
		return // finishLocked puts it on the new grid
	}
	now := l.since(time.Now())
	s.due = gridAfter(s.due-before, s.step(), now)
	l.queueLocked(s, s.due)
	l.mu.Unlock()
	l.poke()
}

// step is the interval of s's grid now.
func (s *Slot[S]) step() time.Duration {
	if s.hurried {
		return s.fast
	}
	return s.interval
}

// queueLocked makes at (since the epoch: due, the next try, or the deadline) s's next event,
// and any earlier one stale.
func (l *Loop[S]) queueLocked(s *Slot[S], at time.Duration) {
	place := &l.byID[s.id]
	place.gen++
	l.events.add(wheelEvent{at: int64(at), id: s.id, gen: place.gen})
}

// endLocked ends s's probe in flight, if any.
func (l *Loop[S]) endLocked(s *Slot[S]) {
	if s.inFlight {
		l.wire.End(s)
		s.inFlight, s.waiting = false, false
		l.inFlight--
	}
}

func (l *Loop[S]) since(t time.Time) time.Duration { return t.Sub(l.epoch) }

// poke tells the loop that its schedule changed, or that an answer came.
func (l *Loop[S]) poke() {
	if wake := l.wake.Load(); wake != nil {
		select {
		case *wake <- struct{}{}:
		default:
		}
	}
}

// Retain implements Scheduler.
func (l *Loop[S]) Retain() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.users++
	if l.users == 1 {
		// A release may still be waiting for the last loop to return; the new one waits
		// too, since the wire's buffers are the loop goroutine's.
		previous := l.done
		// A loop retained again after a pause has not stalled: its last wake is from before.
		l.lastWake.Store(time.Now().UnixNano())
		wake := make(chan struct{}, 1)
		l.wake.Store(&wake)
		l.quit = make(chan struct{})
		l.done = make(chan struct{})
		go l.run(previous, wake, l.quit, l.done)
	}
}

// Release implements Scheduler: it ends the loop, and closes what the wire holds, when the last
// user stops.
func (l *Loop[S]) Release() {
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
	l.wire.Close()
	l.wake.Store(nil)
}

// run is the loop: take in the answers that came, handle the events that are due, flush,
// report, sleep until the next event (no sooner than a tick away).
func (l *Loop[S]) run(previous, wake, quit <-chan struct{}, done chan<- struct{}) {
	defer close(done)
	if previous != nil {
		<-previous
	}
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		l.wire.Poll()
		wokeAt := time.Now()
		l.lastWake.Store(wokeAt.UnixNano())
		l.wakes.Add(1)
		now := l.since(wokeAt)
		l.mu.Lock()
		for _, a := range l.wire.Answered() {
			switch {
			case !a.Slot.inFlight: // an earlier answer in the batch ended its probe
			case !a.Started.IsZero():
				l.startedLocked(a.Slot, l.since(a.Started))
			default:
				l.finishLocked(a.Slot, now, a.Err)
			}
		}
		l.dueLocked(now)
		next := time.Duration(-1) // no event: sleep until poked
		if l.inFlight > 0 {
			next = Tick // answers are taken in at the next wake
		}
		if at, ok := l.events.next(); ok {
			if d := max(time.Duration(at)-now, Tick); next < 0 || d < next {
				next = d
			}
		}
		if l.count > 0 && (next < 0 || next > Heartbeat) {
			next = Heartbeat
		}
		l.mu.Unlock()

		if failed := l.wire.Flush(); len(failed) > 0 {
			l.refused(failed)
		}
		for _, rep := range l.reports {
			rep.to(rep.r)
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

// refused ends the probes whose tries could not be sent (no route, say) with that error at
// once, as a refused connection ends a TCP probe.
func (l *Loop[S]) refused(failed []Answer[S]) {
	now := l.since(time.Now())
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, a := range failed {
		if a.Slot.scheduled && a.Slot.inFlight {
			l.finishLocked(a.Slot, now, a.Err)
		}
	}
}

// finishLocked reports s's probe and puts s back on its grid. now is since the epoch.
func (l *Loop[S]) finishLocked(s *Slot[S], now time.Duration, err error) {
	l.endLocked(s)
	l.reports = append(l.reports, report{s.report, Result{Took: now - s.sent, Late: max(s.sent-s.due, 0), Err: err}})
	if !s.phased {
		s.phased = true // the first probe was at once; the grid starts at a random phase
		s.due += time.Duration(rand.Int64N(int64(s.interval))) - s.interval
	}
	s.due = gridAfter(s.due, s.step(), now)
	l.queueLocked(s, s.due)
}

// dueLocked handles every event due by now (since the epoch): a probe to start, a try to
// repeat, a deadline.
func (l *Loop[S]) dueLocked(now time.Duration) {
	l.events.expire(int64(now), func(e wheelEvent) {
		if place := l.byID[e.id]; place.s != nil && place.gen == e.gen {
			l.handleLocked(place.s, now)
		}
	})
}

// handleLocked handles s's next event, which is due.
func (l *Loop[S]) handleLocked(s *Slot[S], now time.Duration) {
	switch {
	case s.inFlight && now >= s.deadline:
		l.finishLocked(s, now, l.wire.TimedOut(s, now-s.sent))
	case s.inFlight:
		// The next try: paid from the budget the loops share, so an overloaded prober does
		// not multiply its own load.
		if s.tries < s.maxTries && s.budget.Withdraw() {
			s.tries++
			if err := l.wire.Try(s, false); err != nil {
				l.finishLocked(s, now, err)
				return
			}
		}
		s.nextTry += s.timeout / MaxTries
		if s.tries < s.maxTries && s.nextTry < s.deadline {
			l.queueLocked(s, s.nextTry)
		} else {
			l.queueLocked(s, s.deadline)
		}
	default:
		s.budget.Deposit()
		l.lateness[l.lateCount%latenessSamples] = max(now-s.due, 0)
		l.lateCount++
		s.inFlight = true
		l.inFlight++
		s.sent, s.tries = now, 1
		s.deadline = now + s.timeout
		s.nextTry = now + s.timeout/MaxTries
		if s.turns {
			// No deadline while the try waits for its turn: startedLocked sets it.
			s.waiting, s.deadline = true, maxTime
		}
		if err := l.wire.Try(s, true); err != nil {
			l.finishLocked(s, now, err)
			return
		}
		switch {
		case s.waiting:
		case s.maxTries > 1:
			l.queueLocked(s, s.nextTry)
		default:
			l.queueLocked(s, s.deadline)
		}
	}
}

// maxTime is a deadline that never comes.
const maxTime = time.Duration(1<<63 - 1)

// startedLocked starts the clock of s's probe, whose try waited for a turn and began at (since
// the epoch): its time and its timeout count from then, and the wait shows as its lateness.
func (l *Loop[S]) startedLocked(s *Slot[S], at time.Duration) {
	if !s.waiting {
		return
	}
	s.waiting = false
	s.sent = at
	s.deadline = at + s.timeout
	l.queueLocked(s, s.deadline)
}

// gridAfter returns the probe time after last on its grid of interval, all three measured from
// a common origin. If a probe overran whole intervals they are skipped rather than made up in a
// burst.
func gridAfter(last, interval, now time.Duration) time.Duration {
	next := last + interval
	if next <= now {
		next += ((now-next)/interval + 1) * interval
	}
	return next
}
