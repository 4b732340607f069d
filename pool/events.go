package pool

import (
	"github.com/healthdns/healthdns/event"
	"github.com/healthdns/healthdns/health"
)

// publish hands e, of this pool's server and zone, to the process's events. Bus.Publish never
// waits: it is called under the pool's mutex, from the rebuild that decided the transition.
func (p *Pool) publish(e event.Event) {
	e.Server, e.Zone = p.cfg.Server, p.cfg.Zone
	p.cfg.Events.Publish(e)
}

// upDownLocked publishes a member's change of state once it has a verdict: a backend is up
// while every check passes, so the first failing check is the one that took it down.
func (p *Pool) upDownLocked(m *member, isUp bool) {
	if !checked(m) {
		return
	}
	was, known := m.wasUp, m.verdict
	m.verdict, m.wasUp = true, isUp
	if !known || was == isUp {
		return
	}
	e := event.Event{Kind: event.BackendUp, Backend: m.Addr.String()}
	if !isUp {
		e.Kind = event.BackendDown
		for _, l := range m.leases {
			if l.Up() {
				continue
			}
			st := l.Status()
			e.Check = st.Target.Spec.Check.String()
			if st.LastFailure != nil {
				e.Reason, e.Error = health.Reason(st.LastFailure), st.LastFailure.Error()
			}
			break
		}
	}
	p.publish(e)
}

// drainEventLocked publishes a member's drain starting, changing (its reason or end) or ending,
// from the drain_info it had to the one it has; a pool's first rebuild only takes note, since
// the drains it finds (the Corefile's, the API's that a reload keeps) are not news.
func (p *Pool) drainEventLocked(m *member, was, now drainInfo) {
	if !p.published {
		return
	}
	switch {
	case now.On:
		by := now.By
		if by == "api" {
			by = apiCaller(m.op.by)
		}
		p.publish(event.Event{Kind: event.BackendDrained, Backend: m.Addr.String(), Reason: now.Reason, Until: now.Until, By: by})
	case was.On:
		by := was.By
		if lifter, ok := p.ops.liftedBy(m.Addr); ok {
			by = apiCaller(lifter)
		}
		p.publish(event.Event{Kind: event.BackendUndrained, Backend: m.Addr.String(), Reason: was.Reason, By: by})
	}
}

// apiCaller is an event's by for a write of the status API: "api" and the caller as its log
// line names it, so that a script can tell an operator's action from the configuration's, and
// whose it was.
func apiCaller(caller string) string {
	if caller == "" {
		return "api"
	}
	return "api " + caller
}

// listEvents publishes the backends a live list added and removed. The first list a pool
// reads is not news (a reload's pool reads the list the old one had), and a backend line is not
// the list's.
func (p *Pool) listEvents(added, removed []string) {
	for _, a := range added {
		p.publish(event.Event{Kind: event.BackendAdded, Backend: a, Source: p.cfg.Source.Label()})
	}
	for _, a := range removed {
		p.publish(event.Event{Kind: event.BackendRemoved, Backend: a, Source: p.cfg.Source.Label()})
	}
}
