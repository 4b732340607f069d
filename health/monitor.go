package health

import (
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/healthdns/healthdns/health/internal/engine"
)

// Result is the outcome of one probe.
type Result = engine.Result

// Change is a state change of a target: its first verdict (First) or a rise/fall transition.
type Change struct {
	// Owners are the owners (Registry.Acquire's) holding a lease on the target, sorted: whom
	// the change concerns, for the log line.
	Owners []string
	Up     bool
	First  bool  // the verdict of the first probe, which sets the state outright
	Err    error // the failure that took it down (nil when Up)
	Streak int   // consecutive results that caused the change
	Need   int   // the rise or fall threshold that was met
	// Output is the line a push check's passing report sent, when that report made it up.
	Output string
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

// Monitor holds the state of one target, which a loop of the engine probes. The state is read
// with atomics, so readers never wait for a probe.
type Monitor struct {
	target Target
	obs    Observer
	probed func(Result)
	loop   engine.Scheduler // the loop of the target's wire
	probe  engine.Target    // what the loop is given

	up      atomic.Bool
	checked chan struct{} // closed once the first probe has decided the state

	// record's state. A result the loop has taken out may arrive after stop: stopped turns
	// that away. Lock order: mu, then the loop's mutex (Schedule, Hurry).
	mu      sync.Mutex
	h       hysteresis
	ticket  engine.Ticket // while started
	decided bool
	doubt   bool // the last result disagreed with the state: the loop hurries
	stopped bool
	status  status // what a status page shows, kept by record
	output  string // push: the line of the report being taken, for Change.Output

	subMu   sync.Mutex
	subs    map[uint64]func()
	nextSub uint64

	refs   int            // guarded by the Registry's mutex
	owners map[string]int // leases per owner; guarded by the Registry's mutex
	// The owners, sorted, for Change.Owners: set under the Registry's mutex, read by apply.
	ownerList atomic.Pointer[[]string]
}

func newMonitor(t Target, loop engine.Scheduler, probe engine.Target, obs Observer) *Monitor {
	m := &Monitor{
		target:  t,
		obs:     obs,
		probed:  obs.ProbeRecorder(t),
		loop:    loop,
		probe:   probe,
		h:       hysteresis{rise: t.Spec.Rise, fall: t.Spec.Fall},
		checked: make(chan struct{}),
		subs:    map[uint64]func(){},
		owners:  map[string]int{},
	}
	m.probe.Report = m.record
	return m
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

// start schedules the target on its loop: probed at once, then every interval.
func (m *Monitor) start() {
	m.loop.Retain()
	m.mu.Lock() // a first result that comes before Schedule returns waits for the ticket
	m.ticket = m.loop.Schedule(m.probe)
	m.mu.Unlock()
}

// stop unschedules the target and waits for a record under way.
func (m *Monitor) stop() {
	m.ticket.Unschedule()
	m.mu.Lock()
	m.stopped = true
	m.mu.Unlock()
	m.loop.Release()
}

// record takes one probe's result: the metrics, then the state. The first result sets the
// state outright; later ones go through rise/fall.
func (m *Monitor) record(r Result) { m.take(r, "") }

// take records r, which a push check's report sent with output.
func (m *Monitor) take(r Result, output string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.stopped {
		return
	}
	m.output = output
	m.probed(r)
	m.status.observe(r, time.Now())
	if !m.decided {
		m.decided = true
		m.apply(m.h.first(r))
		return
	}
	if c, changed := m.h.observe(r.Err); changed {
		m.apply(c)
	}
	// A result that disagrees with the state puts it in doubt: the loop probes at Fast until
	// rise or fall settles it, as HAProxy's fastinter does.
	if doubt := m.h.streak > 0; doubt != m.doubt {
		m.doubt = doubt
		m.ticket.Hurry(doubt)
	}
}

// apply tells the observer of a change before anyone can see it: a pool that rebuilds for
// another backend's change reads this one's state, and its "every backend is down" line must
// not come before the line of the change that made it so.
func (m *Monitor) apply(c Change) {
	if owners := m.ownerList.Load(); owners != nil {
		c.Owners = *owners
	}
	if c.Up {
		c.Output = m.output // a failure's output is in its error
	}
	m.obs.Changed(m.target, c)
	m.up.Store(c.Up)
	m.status.changed(c, time.Now())
	if c.First {
		close(m.checked)
	}
	m.notify()
}
