package health

import (
	"time"

	"github.com/healthdns/healthdns/health/internal/engine"
)

// HistoryLen is how many state changes a Monitor remembers for Status.
const HistoryLen = 20

// Status is what a Monitor knows of its target, for a status page: a copy, taken under the
// monitor's mutex, so that a reader never sees a record half done.
type Status struct {
	Target  Target
	Checked bool // the first probe has set the state
	Up      bool
	Since   time.Time // when the target entered its state (its first verdict, or the last change)

	// Consecutive results of each kind up to now: one of the two is 0.
	Successes, Failures int

	LastCheck    time.Time     // when the last probe's result came
	LastDuration time.Duration // how long it took
	// LastFailure is the error of the last probe that failed, whenever it was (nil if none
	// has), and LastFailureAt its time: Reason(LastFailure) is its code.
	LastFailure   error
	LastFailureAt time.Time

	Transitions uint64       // state changes after the first verdict
	History     []Transition // the last HistoryLen state changes, oldest first, the first verdict included
}

// Transition is one state change of a target.
type Transition struct {
	At    time.Time
	Up    bool
	First bool  // the first verdict
	Err   error // what took it down; nil for a change to up
}

// Status returns what the monitor knows of its target now.
func (m *Monitor) Status() Status {
	m.mu.Lock()
	defer m.mu.Unlock()
	st := m.status
	out := Status{
		Target:        m.target,
		Checked:       m.decided,
		Up:            m.up.Load(),
		Since:         st.since,
		Successes:     st.successes,
		Failures:      st.failures,
		LastCheck:     st.lastAt,
		LastDuration:  st.lastTook,
		LastFailure:   st.failErr,
		LastFailureAt: st.failAt,
		Transitions:   st.transitions,
	}
	if n := len(st.history); n > 0 {
		out.History = make([]Transition, 0, n)
		out.History = append(out.History, st.history[st.next:]...)
		out.History = append(out.History, st.history[:st.next]...)
	}
	return out
}

// status is a Monitor's record of its results, guarded by its mutex. It costs a probe a few
// stores; the history is allocated at the first verdict, since most targets never change again.
type status struct {
	lastAt              time.Time
	lastTook            time.Duration
	successes, failures int
	failErr             error
	failAt              time.Time
	since               time.Time
	transitions         uint64
	history             []Transition // a ring of up to HistoryLen
	next                int          // the ring's oldest entry, once full
}

func (s *status) observe(r Result, now time.Time) {
	s.lastAt, s.lastTook = now, r.Took
	if r.Err == nil {
		s.successes++
		s.failures = 0
		return
	}
	s.failures++
	s.successes = 0
	s.failErr, s.failAt = r.Err, now
}

func (s *status) changed(c Change, now time.Time) {
	s.since = now
	if !c.First {
		s.transitions++
	}
	t := Transition{At: now, Up: c.Up, First: c.First, Err: c.Err}
	if c.Up {
		t.Err = nil
	}
	if len(s.history) < HistoryLen {
		if s.history == nil {
			s.history = make([]Transition, 0, HistoryLen)
		}
		s.history = append(s.history, t)
		return
	}
	s.history[s.next] = t
	s.next = (s.next + 1) % HistoryLen
}

// StallAfter is how long a loop with targets may go without waking before it counts as
// stalled. It wakes at least once a second (engine.Heartbeat) and at every probe, so five seconds
// is five missed heartbeats, and three intervals of any target probed every second or faster:
// longer than a busy machine deschedules a goroutine, short enough to alert on before rise and
// fall would have acted.
const StallAfter = 5 * engine.Heartbeat

// LoopStatus is how one probe loop is doing: a loop that has stopped waking (stuck in a wire,
// or starved) reports no result, so its targets keep their last state and no probe shows it.
type LoopStatus struct {
	Wire        string // icmp, tcp_syn, tcp_connect or blocking (http, https, exec, unprivileged ping, plain dials)
	Running     bool
	Targets     int
	Interval    time.Duration // the shortest interval of its targets
	LastTick    time.Time     // the loop's last wake
	Wakes       uint64
	LatenessP99 time.Duration // of the last probes' starts after their scheduled time
	// Stalled: the loop has targets and has not woken for StallAfter.
	Stalled bool
}

// Loops returns the status of every loop the registry has made, in a fixed order.
func (r *Registry) Loops() []LoopStatus {
	r.mu.Lock()
	type named struct {
		name string
		loop engine.Scheduler
	}
	var loops []named
	if r.echo != nil {
		loops = append(loops, named{"icmp", r.echo})
	}
	if r.tcp != nil {
		loops = append(loops, named{r.tcpWire, r.tcp})
	}
	if r.blocking != nil {
		loops = append(loops, named{"blocking", r.blocking})
	}
	r.mu.Unlock()
	now := time.Now()
	out := make([]LoopStatus, 0, len(loops))
	for _, n := range loops {
		lv := n.loop.Liveness()
		out = append(out, LoopStatus{
			Wire:        n.name,
			Running:     lv.Running,
			Targets:     lv.Targets,
			Interval:    lv.Interval,
			LastTick:    lv.LastTick,
			Wakes:       lv.Wakes,
			LatenessP99: lv.LatenessP99,
			Stalled:     stalled(lv, now),
		})
	}
	return out
}

func stalled(lv engine.Liveness, now time.Time) bool {
	return lv.Running && lv.Targets > 0 && now.Sub(lv.LastTick) > StallAfter
}

// LoopOf names the loop that probes check c, as LoopStatus.Wire does: which zones a stalled
// loop leaves stale. It follows wireLocked's choice, once the loop exists.
func (r *Registry) LoopOf(c Check) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	switch {
	case r.probe != nil:
	case c.Kind == ICMP && r.echo != nil && r.icmpPrivileged:
		return "icmp"
	case c.Kind == TCP && r.tcp != nil:
		return r.tcpWire
	}
	return "blocking"
}
