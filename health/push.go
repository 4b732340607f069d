package health

import (
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/healthdns/healthdns/health/internal/engine"
)

// The reasons of a push check's failures (Reason).
const (
	ReasonPushFail   = "push_fail"   // the backend reported fail
	ReasonPushMissed = "push_missed" // no report came within the TTL
)

// PushError is a push check's failure: a report of fail, with the output the backend sent,
// or no report within the TTL.
type PushError struct {
	Missed bool
	Output string        // the failing report's line
	TTL    time.Duration // Missed: the TTL that passed
	Last   time.Time     // Missed: the last report, zero for none since the check started
}

func (e *PushError) Error() string {
	switch {
	case !e.Missed && e.Output == "":
		return "push: reported fail"
	case !e.Missed:
		return "push: reported fail: " + e.Output
	case e.Last.IsZero():
		return fmt.Sprintf("push: no report within %s", e.TTL)
	}
	return fmt.Sprintf("push: no report within %s (the last at %s)", e.TTL, e.Last.UTC().Format(time.RFC3339))
}

// ErrNotPush refuses a report to a monitor whose check is not a push check.
var ErrNotPush = errors.New("not a push check")

// Report takes a push check's report: pass, or fail with output, a line the backend sent. It
// counts as a probe's result does, through rise and fall, and the TTL starts again from it.
func (m *Monitor) Report(pass bool, output string) error {
	if !m.Pushed() {
		return fmt.Errorf("%s: %w", m.target, ErrNotPush)
	}
	r := Result{}
	if !pass {
		r.Err = &PushError{Output: output}
	}
	// Re-armed before the result is taken, so that a lapse the timer is firing for now finds
	// the TTL renewed and counts nothing.
	m.ticket.(*pushTicket).reported(time.Now())
	m.take(r, output)
	return nil
}

// Pushed reports whether the monitor's check is a push check, whose first verdict waits for
// the backend (a report, or a TTL without one) and not for a probe.
func (m *Monitor) Pushed() bool { return m.target.Spec.Check.Kind == Push }

// pushes is the "loop" of push checks: nothing to probe, so no goroutine and no socket, only a
// timer per target for the TTL. It is no wire of Registry.Loops: a timer cannot stall as a
// loop blocked in a socket can.
type pushes struct{}

func (pushes) Retain()                   {}
func (pushes) Release()                  {}
func (pushes) Liveness() engine.Liveness { return engine.Liveness{} }
func (pushes) Schedule(t engine.Target) engine.Ticket {
	p := &pushTicket{ttl: t.Interval, fast: t.Fast, report: t.Report}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.due = time.Now().Add(p.ttl)
	p.timer = time.AfterFunc(p.ttl, p.lapse)
	return p
}

// pushTicket counts a TTL that passes without a report as a failed probe: the first lapse a TTL
// after the last report (or the start), and then, while no report comes, one every TTL, or every
// fast interval while the target is in doubt, so that fall settles quickly once a node went
// silent. A report always waits a whole TTL for the next: the node sets its own pace.
type pushTicket struct {
	ttl, fast time.Duration
	report    func(Result)

	mu      sync.Mutex
	timer   *time.Timer
	due     time.Time // when the next lapse counts
	last    time.Time // the last report, zero for none
	lapsing bool      // no report since the last lapse
	hurry   bool
	stopped bool
}

func (p *pushTicket) reported(now time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stopped {
		return
	}
	p.last, p.due, p.lapsing = now, now.Add(p.ttl), false
	p.timer.Reset(p.ttl)
}

// lapse runs on the timer's goroutine. A timer reset by a report while it was firing finds the
// due time moved and counts nothing.
func (p *pushTicket) lapse() {
	p.mu.Lock()
	now := time.Now()
	if p.stopped || now.Before(p.due) {
		p.mu.Unlock()
		return
	}
	err := &PushError{Missed: true, TTL: p.ttl, Last: p.last}
	next := p.ttl
	if p.hurry && p.fast > 0 {
		next = p.fast
	}
	p.due, p.lapsing = now.Add(next), true
	p.timer.Reset(next)
	p.mu.Unlock()
	// Outside mu: the monitor's record calls Hurry, which takes it.
	p.report(Result{Err: err})
}

func (p *pushTicket) Unschedule() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.stopped = true
	p.timer.Stop()
}

// Hurry shortens the wait between lapses while on; it never hastens the lapse after a report.
func (p *pushTicket) Hurry(on bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.hurry = on
	// The lapse that put the target in doubt has set the next a TTL away: bring it in.
	if on && p.lapsing && !p.stopped && p.fast > 0 {
		if now := time.Now(); p.due.Sub(now) > p.fast {
			p.due = now.Add(p.fast)
			p.timer.Reset(p.fast)
		}
	}
}
