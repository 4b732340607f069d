package pool

import (
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"time"
)

// startDrainsLocked logs each drained backend once, at start, with its reason and end, and sets
// its gauge. A drain whose end has passed is said to be over, since the Corefile still asks for it.
func (p *Pool) startDrainsLocked(now time.Time) {
	for _, m := range p.members {
		p.startDrainLocked(m, now)
	}
}

// startDrainLocked applies member m's drain as it starts: at start, or when a new list drains it.
func (p *Pool) startDrainLocked(m *member, now time.Time) {
	d := m.Drain
	if !d.On {
		return
	}
	m.Drained = d.At(now)
	switch {
	case !m.Drained:
		log.Infof("zone %s: backend %s: drain ended at %s, before it was applied; answered while healthy%s",
			p.cfg.Zone, m.Addr, d.Until.Format(time.RFC3339), reasonSuffix(d.Reason))
	case d.Until.IsZero():
		log.Infof("zone %s: backend %s: drained, probed but not answered%s", p.cfg.Zone, m.Addr, reasonSuffix(d.Reason))
	default:
		log.Infof("zone %s: backend %s: drained until %s, probed but not answered%s",
			p.cfg.Zone, m.Addr, d.Until.Format(time.RFC3339), reasonSuffix(d.Reason))
	}
}

// drainsLocked ends each drain whose time came since the last rebuild, logging it, and sets
// the drained gauge. Callers hold mu.
func (p *Pool) drainsLocked(now time.Time) {
	p.operatorDrainsLocked(now)
	for _, m := range p.members {
		if m.Drained && !m.Drain.At(now) {
			m.Drained = false
			log.Infof("zone %s: backend %s: drain ended at %s; answered again while healthy%s",
				p.cfg.Zone, m.Addr, m.Drain.Until.Format(time.RFC3339), reasonSuffix(m.Drain.Reason))
		}
		setGauge(m.drainedGauge, &m.drainedSet, m.outOfService())
		p.drainInfoLocked(m)
	}
}

// drainInfoLocked keeps the backend's drain_info series, which says why and until when it is
// drained, in step with the drain that holds: its configuration's, else an operator's.
func (p *Pool) drainInfoLocked(m *member) {
	var info drainInfo
	switch {
	case m.Drained:
		info = newDrainInfo(m.Drain, "config")
	case m.op.On:
		info = newDrainInfo(m.op.Drain, "api")
	}
	if info == m.info {
		return
	}
	p.drainEventLocked(m, m.info, info)
	if m.info.On {
		p.metrics.BackendDrainInfo.DeleteLabelValues(p.cfg.Server, p.cfg.Zone, m.Addr.String(), m.info.Reason, m.info.Until, m.info.By)
	}
	if info.On {
		p.metrics.BackendDrainInfo.WithLabelValues(p.cfg.Server, p.cfg.Zone, m.Addr.String(), info.Reason, info.Until, info.By).Set(1)
	}
	m.info = info
}

// drainInfo is what drain_info's labels say of a drain.
type drainInfo struct {
	On                bool
	Reason, Until, By string
}

// newDrainInfo bounds the reason, free text, to keep a label a reasonable size.
func newDrainInfo(d Drain, by string) drainInfo {
	info := drainInfo{On: true, Reason: d.Reason, By: by}
	if r := []rune(info.Reason); len(r) > 64 {
		info.Reason = string(r[:63]) + "…"
	}
	if !d.Until.IsZero() {
		info.Until = d.Until.UTC().Format(time.RFC3339)
	}
	return info
}

func reasonSuffix(reason string) string {
	if reason == "" {
		return ""
	}
	return " (" + reason + ")"
}

// operatorDrains are the drains an operator set through the status API on one server's zone.
// They belong to the zone rather than to a pool: every pool of the same server and zone shares
// them through the registry (startOperatorDrainsLocked), so that a Corefile reload, which
// replaces the pool, does not put back into the answers a backend an operator took out. A
// drain of a backend the list no longer has stays here and has no effect.
type operatorDrains struct {
	mu     sync.Mutex
	byAddr map[netip.Addr]operatorDrain
	// The pools that apply them: one, or during a reload the old and the new. A write rebuilds
	// them all, so that the one answering queries at that moment takes the drain at once.
	pools []*Pool
	// Who lifted each drain an undrain ended, for its event's by; a drain of the address
	// forgets it.
	lifters map[netip.Addr]string
}

// lifted records that by undrained addr. Callers hold mu.
func (o *operatorDrains) lifted(addr netip.Addr, by string) {
	if o.lifters == nil {
		o.lifters = map[netip.Addr]string{}
	}
	o.lifters[addr] = by
}

// liftedBy returns who undrained addr, if an undrain did. It is called under Pool.mu, which
// comes before operatorDrains.mu; a pool that never started has none.
func (o *operatorDrains) liftedBy(addr netip.Addr) (string, bool) {
	if o == nil {
		return "", false
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	by, ok := o.lifters[addr]
	return by, ok
}

// operatorDrain is a drain set through the status API, and who set it.
type operatorDrain struct {
	Drain
	by    string    // the caller's address, as the HTTP server saw it
	since time.Time // when it was set
	key   string    // the etcd key that holds it, for a pool whose list is in etcd (fleetdrains.go)
	rev   int64     // and the key's ModRevision
}

// operatorDrainsKey names the zone's operator drains in the registry: the server and the zone,
// whatever the backends, since a drain outlives a change of the list.
func (p *Pool) operatorDrainsKey() string {
	return fmt.Sprintf("operator drains %s %s", p.cfg.Server, p.cfg.Zone)
}

// startOperatorDrainsLocked takes the operator drains of the pool this one replaces (a reload
// starts the new pool while the old one runs), or starts with none, and logs each that holds
// for one of its backends. Callers hold mu, after the members are made.
func (p *Pool) startOperatorDrainsLocked(now time.Time) {
	key := p.operatorDrainsKey()
	if prev, ok := p.reg.Kept(key); ok {
		p.ops = prev.(*Pool).ops // set before prev kept itself, under the registry's mutex
	} else {
		p.ops = &operatorDrains{byAddr: map[netip.Addr]operatorDrain{}}
	}
	p.reg.Keep(key, p)
	p.ops.mu.Lock()
	defer p.ops.mu.Unlock()
	p.ops.pools = append(p.ops.pools, p)
	for _, m := range p.members {
		if od, ok := p.ops.byAddr[m.Addr]; ok && od.At(now) {
			log.Infof("zone %s: backend %s: still drained%s by %s via the status API, probed but not answered%s",
				p.cfg.Zone, m.Addr, untilSuffix(od.Until), od.by, reasonSuffix(od.Reason))
		}
	}
}

// stopOperatorDrainsLocked lets go of the zone's operator drains. Callers hold mu.
func (p *Pool) stopOperatorDrainsLocked() {
	if p.ops == nil {
		return // never started
	}
	p.reg.Forget(p.operatorDrainsKey(), p)
	p.ops.mu.Lock()
	defer p.ops.mu.Unlock()
	p.ops.pools = slices.DeleteFunc(p.ops.pools, func(q *Pool) bool { return q == p })
}

// operatorDrainsLocked gives each member the operator drain that holds for it at now, and ends
// (logging it, once for the zone) each whose time came. Callers hold mu: Pool.mu comes before
// operatorDrains.mu.
func (p *Pool) operatorDrainsLocked(now time.Time) {
	if p.ops == nil {
		return
	}
	p.ops.mu.Lock()
	defer p.ops.mu.Unlock()
	for _, m := range p.members {
		od, ok := p.ops.byAddr[m.Addr]
		if ok && !od.At(now) {
			delete(p.ops.byAddr, m.Addr)
			log.Infof("zone %s: backend %s: drain by %s via the status API ended at %s; answered again while healthy%s",
				p.cfg.Zone, m.Addr, od.by, od.Until.Format(time.RFC3339), reasonSuffix(od.Reason))
			p.deleteEndedDrainLocked(m.Addr, od)
			ok = false
		}
		if !ok {
			od = operatorDrain{}
		}
		m.op = od
	}
}

// outOfService reports whether a drain holds for m, its configuration's or an operator's, as of
// the last rebuild.
func (m *member) outOfService() bool { return m.Drained || m.op.On }

// rebuildAll rebuilds every pool applying the drains. Callers hold no pool's mutex.
func (ops *operatorDrains) rebuildAll() {
	ops.mu.Lock()
	pools := slices.Clone(ops.pools)
	ops.mu.Unlock()
	for _, q := range pools {
		q.rebuild()
	}
}
