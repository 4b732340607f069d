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
		p.publish(event.Event{Kind: event.BackendDrained, Backend: m.Addr.String(), Reason: now.Reason, Until: now.Until, By: now.By})
	case was.On:
		p.publish(event.Event{Kind: event.BackendUndrained, Backend: m.Addr.String(), Reason: was.Reason, By: was.By})
	}
}
