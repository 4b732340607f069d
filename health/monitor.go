package health

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

// Change is a state change of a target: its first verdict (First) or a rise/fall transition.
type Change struct {
	Up     bool
	First  bool  // the verdict of the first probe, which sets the state outright
	Err    error // the failure that took it down (nil when Up)
	Streak int   // consecutive results that caused the change
	Need   int   // the rise or fall threshold that was met
	// Owners are the owners (Registry.Acquire's) holding a lease on the target, sorted: whom
	// the change concerns, for the log line.
	Owners []string
}

// Observer is told of every probe and every state change, from the probing goroutine. It must not
// block: metrics and one log line are its job.
type Observer interface {
	// ProbeRecorder returns what t's loop calls after each probe. It is asked once per loop,
	// so that what a record needs (its metric series) is looked up once, not at every probe.
	ProbeRecorder(t Target) func(Result)
	Changed(t Target, c Change)
	// Released is called when owner holds no lease on addr any more (whatever the spec).
	Released(owner string, addr netip.Addr)
	// Stopped is called when no loop probes addr with check any more (whatever the timing).
	Stopped(addr netip.Addr, check Check)
}

// Monitor holds the state of one target, and runs its probe loop unless its prober is a
// scheduler that probes it from a loop of its own. The state is read with atomics,
// so readers never wait for a probe.
type Monitor struct {
	target Target
	prober Prober
	obs    Observer
	probed func(Result)
	budget *retryBudget // for tries beyond the first; shared by the registry's monitors

	up      atomic.Bool
	checked chan struct{} // closed once the first probe has decided the state

	// record's state. A scheduler may report from more than one goroutine, and a result it
	// has taken out may arrive after stop: stopped turns that away.
	mu      sync.Mutex
	h       hysteresis
	decided bool
	stopped bool

	subMu   sync.Mutex
	subs    map[uint64]func()
	nextSub uint64

	cancel context.CancelFunc
	done   chan struct{}

	refs   int            // guarded by the Registry's mutex
	owners map[string]int // leases per owner; guarded by the Registry's mutex
	// The owners, sorted, for Change.Owners: set under the Registry's mutex, read by apply.
	ownerList atomic.Pointer[[]string]
}

func newMonitor(t Target, p Prober, obs Observer, budget *retryBudget) *Monitor {
	return &Monitor{
		target:  t,
		prober:  p,
		budget:  budget,
		obs:     obs,
		probed:  obs.ProbeRecorder(t),
		h:       hysteresis{rise: t.Spec.Rise, fall: t.Spec.Fall},
		checked: make(chan struct{}),
		subs:    map[uint64]func(){},
		done:    make(chan struct{}),
		owners:  map[string]int{},
	}
}

// countOwnerLocked adds delta to owner's leases and republishes the owner list. The caller
// holds the Registry's mutex.
func (m *Monitor) countOwnerLocked(owner string, delta int) {
	m.owners[owner] += delta
	if m.owners[owner] <= 0 {
		delete(m.owners, owner)
	}
	list := make([]string, 0, len(m.owners))
	for o := range m.owners {
		list = append(list, o)
	}
	slices.Sort(list)
	m.ownerList.Store(&list)
}

// Up reports the current verdict; it is false until the first probe succeeded.
func (m *Monitor) Up() bool { return m.up.Load() }

// Checked is closed once the first probe has set the state.
func (m *Monitor) Checked() <-chan struct{} { return m.checked }

// IsChecked reports whether the first probe has set the state.
func (m *Monitor) IsChecked() bool {
	select {
	case <-m.checked:
		return true
	default:
		return false
	}
}

// Subscribe calls fn, from the probing goroutine, after every state change. The returned func
// removes fn; after it returns fn is not called again.
func (m *Monitor) Subscribe(fn func()) (unsubscribe func()) {
	m.subMu.Lock()
	id := m.nextSub
	m.nextSub++
	m.subs[id] = fn
	m.subMu.Unlock()
	return func() {
		m.subMu.Lock()
		delete(m.subs, id)
		m.subMu.Unlock()
	}
}

func (m *Monitor) notify() {
	// Called under subMu so that an unsubscribe that has returned is final; subscribers only
	// rebuild a snapshot and never call back into the monitor.
	m.subMu.Lock()
	defer m.subMu.Unlock()
	for _, fn := range m.subs {
		fn()
	}
}

func (m *Monitor) start() {
	if r, ok := m.prober.(retainer); ok {
		r.retain()
	}
	if s, ok := m.prober.(scheduler); ok {
		close(m.done)
		s.schedule(m)
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	m.cancel = cancel
	go m.run(ctx)
}

func (m *Monitor) stop() {
	if s, ok := m.prober.(scheduler); ok {
		s.unschedule(m)
	} else {
		m.cancel()
	}
	<-m.done
	m.mu.Lock()
	m.stopped = true // waits for a record under way
	m.mu.Unlock()
	if r, ok := m.prober.(retainer); ok {
		r.release()
	}
}

// run probes at once, so the first answer is already true, and then every Interval at a random
// phase, so that targets started together do not probe together.
func (m *Monitor) run(ctx context.Context) {
	defer close(m.done)
	spec := m.target.Spec
	start := time.Now()
	r := m.probe(ctx, start)
	if ctx.Err() != nil {
		return // a probe cut short by shutdown says nothing about the backend
	}
	m.record(r)
	next := start.Add(time.Duration(rand.Int64N(int64(spec.Interval))))
	timer := time.NewTimer(time.Until(next))
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		}
		r := m.probe(ctx, next)
		if ctx.Err() != nil {
			return
		}
		m.record(r)
		next = nextOnGrid(next, spec.Interval, time.Now())
		timer.Reset(time.Until(next))
	}
}

// nextOnGrid returns the probe time after last on its grid of interval. If a probe overran
// whole intervals they are skipped rather than made up in a burst.
func nextOnGrid(last time.Time, interval time.Duration, now time.Time) time.Time {
	return last.Add(gridAfter(0, interval, now.Sub(last)))
}

// gridAfter is nextOnGrid for times measured from a common origin.
func gridAfter(last, interval, now time.Duration) time.Duration {
	next := last + interval
	if next <= now {
		next += ((now-next)/interval + 1) * interval
	}
	return next
}

func (m *Monitor) probe(ctx context.Context, scheduled time.Time) Result {
	begin := time.Now()
	pctx, cancel := context.WithTimeout(withProbeTimeout(ctx, m.target.Spec.Timeout), m.target.Spec.Timeout)
	err := attempt(pctx, cancel, m.prober, m.target.Addr, probeAttempts, m.budget)
	cancel()
	return Result{Took: time.Since(begin), Late: max(begin.Sub(scheduled), 0), Err: err}
}

// record takes one probe's result: the metrics, then the state. The first result sets the
// state outright; later ones go through rise/fall.
func (m *Monitor) record(r Result) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.stopped {
		return
	}
	m.probed(r)
	if !m.decided {
		m.decided = true
		m.apply(m.h.first(r))
		return
	}
	if c, changed := m.h.observe(r.Err); changed {
		m.apply(c)
	}
}

func (m *Monitor) apply(c Change) {
	if owners := m.ownerList.Load(); owners != nil {
		c.Owners = *owners
	}
	m.up.Store(c.Up)
	if c.First {
		close(m.checked)
	}
	m.obs.Changed(m.target, c)
	m.notify()
}

// hysteresis turns probe results into state changes: down after Fall consecutive failures, up
// after Rise consecutive successes, as in HAProxy and Keepalived.
type hysteresis struct {
	rise, fall int
	up         bool
	streak     int // consecutive results that disagree with the current state
}

func (h *hysteresis) first(r Result) Change {
	h.up = r.Err == nil
	h.streak = 0
	c := Change{Up: h.up, First: true, Err: r.Err, Streak: 1, Need: 1}
	return c
}

func (h *hysteresis) observe(err error) (Change, bool) {
	if (err == nil) == h.up {
		h.streak = 0
		return Change{}, false
	}
	h.streak++
	need := h.fall
	if !h.up {
		need = h.rise
	}
	if h.streak < need {
		return Change{}, false
	}
	h.up = !h.up
	c := Change{Up: h.up, Err: err, Streak: h.streak, Need: need}
	h.streak = 0
	return c, true
}
