package balance

import (
	"fmt"
	"math/bits"
	"strings"
	"sync"
	"time"
)

// DefaultPriority is a backend's priority when the Corefile gives none: Keepalived's default for
// a VRRP instance, so configurations read the same way in both.
const DefaultPriority = 100

// Groups is a set of priorities 1..255, as a bitmap: a value that is copied without allocation
// and compared with ==, so "are the groups of the new configuration the same" is one comparison.
// The zero value is the empty set.
type Groups [4]uint64

// Add puts priority p in g. Priority 0 is not a priority (VRRP uses it for a master that resigns,
// and setup allows 1..255): adding it is a programming error in the caller, so it panics.
func (g *Groups) Add(p uint8) {
	if p == 0 {
		panic("balance: priority 0 added to Groups; priorities are 1..255")
	}
	g[p/64] |= 1 << (p % 64)
}

// Has reports whether priority p is in g.
func (g Groups) Has(p uint8) bool { return g[p/64]&(1<<(p%64)) != 0 }

// Len returns how many priorities g holds.
func (g Groups) Len() int {
	n := 0
	for _, w := range g {
		n += bits.OnesCount64(w)
	}
	return n
}

// Highest returns the highest priority in g, and false when g is empty.
func (g Groups) Highest() (uint8, bool) { return g.below(256) }

// below returns the highest priority in g under limit (at most 256), and false when there is
// none: one step of a walk from the most preferred group down.
func (g Groups) below(limit int) (uint8, bool) {
	for w := (limit - 1) / 64; w >= 0 && limit > 0; w-- {
		word := g[w]
		if top := limit - w*64; top < 64 {
			word &= 1<<top - 1
		}
		if word != 0 {
			return uint8(w*64 + 63 - bits.LeadingZeros64(word)), true
		}
	}
	return 0, false
}

func (g Groups) and(o Groups) Groups {
	for i := range g {
		g[i] &= o[i]
	}
	return g
}

// List returns the priorities of the set, highest first.
func (g Groups) List() []uint8 {
	var out []uint8
	for p, ok := g.Highest(); ok; p, ok = g.below(int(p)) {
		out = append(out, p)
	}
	return out
}

// String lists the priorities from the highest, as the log and tests show them: "{200 100}".
func (g Groups) String() string {
	var b strings.Builder
	b.WriteByte('{')
	for p, ok := g.Highest(); ok; p, ok = g.below(int(p)) {
		if b.Len() > 1 {
			b.WriteByte(' ')
		}
		fmt.Fprint(&b, p)
	}
	b.WriteByte('}')
	return b.String()
}

// Preemption says when a higher group takes over from a lower one that still has a healthy
// backend. The zero value preempts at once (Keepalived's default).
type Preemption struct {
	// Never keeps the serving group while it has a healthy backend (Keepalived's nopreempt): a
	// higher group takes back only once the serving one empties. It wins over Delay.
	Never bool
	// Delay makes a higher group wait until it has stayed healthy this long before it takes back
	// (Keepalived's preempt_delay), so a backend that flaps cannot drag clients back and forth.
	Delay time.Duration
}

// Switch is one change of the serving group, for the log line that tells an operator why
// clients moved. From and To are 0 for "no group": before the first verdicts, or all down.
type Switch struct {
	From, To uint8
	Reason   string
}

// Changed reports whether the serving group changed.
func (s Switch) Changed() bool { return s.From != s.To }

// Failover decides which priority group of one address family serves, like Keepalived's VRRP
// master election but for DNS answers: only the serving group's healthy backends are answered,
// and the pool's policy picks among them.
//
// It is a pure state machine: it learns health only from Update and time only from the now it is
// given, so every sequence of events can be replayed in a table test, and it does no I/O and
// starts no timer. The pool arms its own timer from NextCheck. A mutex makes it safe to call from
// the pool's rebuild and from an operator's command at once; the query path never touches it (it
// reads the snapshot the pool builds from Serving).
type Failover struct {
	pre Preemption

	mu      sync.Mutex
	groups  Groups // configured priorities; a live backend list changes them (SetGroups)
	started bool   // Update has been called: "no group serves" now means all down
	serving uint8  // 0: none
	healthy Groups // as of the last Update
	// since holds, for each healthy group, when it last became healthy: a group that loses its
	// last healthy backend is dropped, so its preempt_delay wait starts over when it returns.
	since   map[uint8]time.Time
	next    time.Time // the earliest moment a waiting group's preempt_delay ends
	waiting uint8     // the group whose wait ends then, 0 for none
}

// NewFailover returns the state machine for the configured priorities of one address family
// (priorities outside groups are ignored by Update). No group serves until the first Update.
func NewFailover(groups Groups, pre Preemption) *Failover {
	return &Failover{groups: groups, pre: pre, since: make(map[uint8]time.Time)}
}

// CarryOver takes prev's state (the serving group, and how long each group has been healthy)
// when prev decided over the same groups, and reports whether it did. A reload that keeps the
// backends and their priorities must not move clients back to the highest group: under nopreempt
// or during a preempt_delay wait that would undo the very decision the setting exists for. The
// caller decides that the backends are the same; CarryOver refuses only a different group set,
// where the old serving group may no longer exist. The new Preemption applies from the next
// Update (a reload from nopreempt to preempt preempts then). Call it before the first Update.
func (f *Failover) CarryOver(prev *Failover) bool {
	if prev == nil || prev == f || prev.Groups() != f.Groups() {
		return false
	}
	prev.mu.Lock()
	started, serving, healthy := prev.started, prev.serving, prev.healthy
	since := make(map[uint8]time.Time, len(prev.since))
	for g, t := range prev.since {
		since[g] = t
	}
	prev.mu.Unlock()
	if !started {
		return false
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.started, f.serving, f.healthy, f.since = true, serving, healthy, since
	f.arm()
	return true
}

// SetGroups replaces the configured priorities, when a live backend list changes them. A group
// that is gone stops being healthy; the serving group, if gone, is replaced at the next Update,
// which the caller makes right after with the new list's health.
func (f *Failover) SetGroups(groups Groups) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.groups = groups
	f.healthy = f.healthy.and(groups)
	for g := range f.since {
		if !groups.Has(g) {
			delete(f.since, g)
		}
	}
	f.arm()
}

// Update tells f which groups have at least one healthy backend at now, and returns the switch
// it makes, if any. Call it on every change of that set (each health transition), since a group
// that empties even briefly must restart its preempt_delay wait, and again at NextCheck.
//
// Call it only once every backend has its first verdict: under nopreempt the first Update
// chooses for good, and a primary whose check has not answered yet would lose to its standby.
func (f *Failover) Update(healthy Groups, now time.Time) Switch {
	f.mu.Lock()
	defer f.mu.Unlock()
	healthy = healthy.and(f.groups)
	for g, ok := f.groups.Highest(); ok; g, ok = f.groups.below(int(g)) {
		switch {
		case !healthy.Has(g):
			delete(f.since, g)
		case !f.healthy.Has(g) || !f.started:
			f.since[g] = now
		}
	}
	f.healthy = healthy
	first := !f.started
	f.started = true
	sw := f.decide(now, first)
	f.arm()
	return sw
}

// decide moves the serving group as the preemption rules say. Callers hold mu.
func (f *Failover) decide(now time.Time, first bool) Switch {
	from := f.serving
	top, any := f.healthy.Highest()
	switch {
	case !any:
		f.serving = 0
		if from != 0 {
			return Switch{from, 0, fmt.Sprintf("group %d has no healthy backend", from)}
		}
	case first:
		f.serving = top
		return Switch{0, top, fmt.Sprintf("group %d is the highest group with a healthy backend", top)}
	case from == 0:
		f.serving = top
		return Switch{0, top, fmt.Sprintf("group %d healthy again", top)}
	case !f.healthy.Has(from):
		// The highest healthy group takes over at once, even one still inside its preempt_delay
		// wait: taking a lower group now and preempting it later would move clients twice.
		f.serving = top
		return Switch{from, top, fmt.Sprintf("group %d has no healthy backend", from)}
	case top > from && !f.pre.Never:
		if f.pre.Delay <= 0 {
			f.serving = top
			if f.since[top].Equal(now) {
				return Switch{from, top, fmt.Sprintf("group %d healthy again", top)}
			}
			return Switch{from, top, fmt.Sprintf("group %d has a healthy backend (preempt)", top)}
		}
		// The highest group whose wait is over takes back; a higher one still waiting takes
		// back from it later.
		for g, ok := f.healthy.below(256); ok && g > from; g, ok = f.healthy.below(int(g)) {
			if now.Sub(f.since[g]) >= f.pre.Delay {
				f.serving = g
				return Switch{from, g, fmt.Sprintf("group %d healthy for %s (preempt_delay)", g, f.pre.Delay)}
			}
		}
	}
	return Switch{from, from, ""}
}

// arm computes NextCheck: the earliest end of a preempt_delay wait of a healthy group above the
// serving one. Callers hold mu.
func (f *Failover) arm() {
	f.next, f.waiting = time.Time{}, 0
	if f.serving == 0 || f.pre.Never || f.pre.Delay <= 0 {
		return
	}
	// From the highest down, so that of two waits ending together the higher group's is kept:
	// decide lets it take back first.
	for g, ok := f.healthy.Highest(); ok && g > f.serving; g, ok = f.healthy.below(int(g)) {
		if at := f.since[g].Add(f.pre.Delay); f.waiting == 0 || at.Before(f.next) {
			f.next, f.waiting = at, g
		}
	}
}

// NextCheck returns when Update must be called again, with the same health if nothing changed,
// for a group's preempt_delay wait to end on time; false when no wait is running. The pool arms
// one timer from it after each Update (the time may already be past: call at once then).
func (f *Failover) NextCheck() (time.Time, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.next, f.waiting != 0
}

// Waiting returns the group that takes back from the serving one when its preempt_delay wait
// ends, and when (NextCheck's time), for a status page: a standby that will hand back by itself
// is not one that waits for an operator's fail-back. False when no wait is running.
func (f *Failover) Waiting() (group uint8, until time.Time, ok bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.waiting, f.next, f.waiting != 0
}

// FailBack makes the highest group with a healthy backend serve now, whatever the preemption
// setting: the operator's "go back to the primary" after a nopreempt failover, or to cut a
// preempt_delay wait short. With no healthy group, or the highest already serving, it changes
// nothing.
func (f *Failover) FailBack() Switch {
	f.mu.Lock()
	defer f.mu.Unlock()
	from := f.serving
	top, ok := f.healthy.Highest()
	if !ok || top == from {
		return Switch{from, from, ""}
	}
	f.serving = top
	f.arm()
	return Switch{from, top, "fail-back command"}
}

// Adopt makes group serve when it has a healthy backend: a decision made elsewhere (a fleet of
// servers agreeing on one group through etcd) that this one follows. It changes nothing when the
// group has no healthy backend here, or already serves; the caller then keeps its own choice.
func (f *Failover) Adopt(group uint8, reason string) Switch {
	f.mu.Lock()
	defer f.mu.Unlock()
	from := f.serving
	if !f.started || group == from || !f.healthy.Has(group) {
		return Switch{from, from, ""}
	}
	f.serving = group
	f.arm()
	return Switch{from, group, reason}
}

// Serving returns the group whose healthy backends answer, and false when none does: before the
// first Update, or while every group is down (see AllDown).
func (f *Failover) Serving() (uint8, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.serving, f.serving != 0
}

// AllDown reports whether no group has a healthy backend (after the first Update). The all_down
// mode decides the answer then; serve_all serves the addresses of the Highest group, the one
// clients would use if everything were healthy, not every configured address: a standby is
// meant to be used only when the primary is known down, and here nothing is known.
func (f *Failover) AllDown() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.started && f.serving == 0
}

// Highest returns the highest configured priority (the group all_down serve_all serves), 0 when
// none is configured.
func (f *Failover) Highest() uint8 {
	g, _ := f.Groups().Highest()
	return g
}

// Groups returns the configured priorities.
func (f *Failover) Groups() Groups {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.groups
}

// Healthy returns the groups with a healthy backend as of the last Update, for a status page.
func (f *Failover) Healthy() Groups {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.healthy
}
