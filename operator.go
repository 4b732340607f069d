package healthdns

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"
)

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
}

// operatorDrain is a drain set through the status API, and who set it.
type operatorDrain struct {
	drain
	by    string    // the caller's address, as the HTTP server saw it
	since time.Time // when it was set
	key   string    // the etcd key that holds it, for a pool whose list is in etcd (fleetdrains.go)
	rev   int64     // and the key's ModRevision
}

// operatorError is a write the pool refuses, with the kind of refusal for the API's status code.
type operatorError struct {
	kind operatorErrorKind
	msg  string
}

type operatorErrorKind int

const (
	operatorNotFound    operatorErrorKind = iota // no such backend in the zone
	operatorConflict                             // the write cannot apply to the state it finds
	operatorUnavailable                          // the pool is not running: starting, or replaced
)

func (e *operatorError) Error() string { return e.msg }

func refuse(kind operatorErrorKind, format string, args ...any) error {
	return &operatorError{kind: kind, msg: fmt.Sprintf(format, args...)}
}

// operatorDrainsKey names the zone's operator drains in the registry: the server and the zone,
// whatever the backends, since a drain outlives a change of the list.
func (p *Pool) operatorDrainsKey() string {
	return fmt.Sprintf("operator drains %s %s", p.cfg.server, p.cfg.zone)
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
		if od, ok := p.ops.byAddr[m.addr]; ok && od.at(now) {
			log.Infof("zone %s: backend %s: still drained%s by %s via the status API, probed but not answered%s",
				p.cfg.zone, m.addr, untilSuffix(od.until), od.by, reasonSuffix(od.reason))
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
		od, ok := p.ops.byAddr[m.addr]
		if ok && !od.at(now) {
			delete(p.ops.byAddr, m.addr)
			log.Infof("zone %s: backend %s: drain by %s via the status API ended at %s; answered again while healthy%s",
				p.cfg.zone, m.addr, od.by, od.until.Format(time.RFC3339), reasonSuffix(od.reason))
			p.deleteEndedDrainLocked(m.addr, od)
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
func (m *member) outOfService() bool { return m.drained || m.op.on }

// rebuildAll rebuilds every pool applying the drains. Callers hold no pool's mutex.
func (ops *operatorDrains) rebuildAll() {
	ops.mu.Lock()
	pools := slices.Clone(ops.pools)
	ops.mu.Unlock()
	for _, q := range pools {
		q.rebuild()
	}
}

// memberLocked returns the member of address addr, or nil. Callers hold mu.
func (p *Pool) memberLocked(addr netip.Addr) *member {
	for _, m := range p.members {
		if m.addr == addr {
			return m
		}
	}
	return nil
}

// runningLocked refuses a write to a pool that has not started or has stopped. Callers hold mu.
func (p *Pool) runningLocked() error {
	if p.ops == nil || p.stopped {
		return refuse(operatorUnavailable, "zone %s is starting or being replaced by a reload; try again", p.cfg.zone)
	}
	return nil
}

// configDrainLocked refuses a write on a backend that its configuration drains: that drain is
// lifted where it was set. Callers hold mu.
func (p *Pool) configDrainLocked(m *member, now time.Time) error {
	if !m.drain.at(now) {
		return nil
	}
	return refuse(operatorConflict, "zone %s: backend %s is drained%s by %s%s; lift or change that drain there",
		p.cfg.zone, m.addr, untilSuffix(m.drain.until), p.listedBy(m.addr), reasonSuffix(m.drain.reason))
}

// listedBy names where backend addr comes from: a backend line or the pool's source.
func (p *Pool) listedBy(addr netip.Addr) string {
	for _, b := range p.cfg.backends {
		if b.addr == addr {
			return "its backend line in the Corefile"
		}
	}
	return "the backends " + p.cfg.source.String()
}

// operatorDrainsFor returns the zone's operator drains, once it has checked that an operator
// may drain or undrain addr: the pool runs, lists addr, and its configuration does not drain it.
func (p *Pool) operatorDrainsFor(addr netip.Addr, now time.Time) (*operatorDrains, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := p.runningLocked(); err != nil {
		return nil, err
	}
	m := p.memberLocked(addr)
	if m == nil {
		return nil, refuse(operatorNotFound, "zone %s has no backend %s", p.cfg.zone, addr)
	}
	if err := p.configDrainLocked(m, now); err != nil {
		return nil, err
	}
	return p.ops, nil
}

// Drain takes backend addr out of the answers as a drain on its backend line would: probed, not
// answered, not counted down, until it is undrained or until d.until. The drain is the zone's,
// and the next pool of a reload applies it too. by names the caller for the log.
func (p *Pool) Drain(addr netip.Addr, d drain, by string) error {
	now := time.Now()
	ops, err := p.operatorDrainsFor(addr, now)
	if err != nil {
		return err
	}
	d.on = true
	if p.cfg.source.kind == sourceEtcd {
		return p.writeFleetDrain(addr, d, by, now)
	}

	ops.mu.Lock()
	// A drain of a backend no longer listed never ends through a rebuild: sweep them here. A
	// minute late, so that a listed backend's end is left to the rebuild that logs it.
	for a, od := range ops.byAddr {
		if !od.at(now.Add(-time.Minute)) {
			delete(ops.byAddr, a)
		}
	}
	ops.byAddr[addr] = operatorDrain{drain: d, by: by, since: now}
	ops.mu.Unlock()
	log.Infof("zone %s: backend %s: drained%s by %s via the status API%s", p.cfg.zone, addr, untilSuffix(d.until), by, reasonSuffix(d.reason))
	ops.rebuildAll()
	return nil
}

// Undrain lifts the operator drain of backend addr. A drain of its configuration is refused:
// the next load of the configuration would set it again.
func (p *Pool) Undrain(addr netip.Addr, by string) error {
	now := time.Now()
	ops, err := p.operatorDrainsFor(addr, now)
	if err != nil {
		return err
	}
	if p.cfg.source.kind == sourceEtcd {
		return p.writeFleetDrain(addr, drain{}, by, now)
	}

	ops.mu.Lock()
	od, ok := ops.byAddr[addr]
	delete(ops.byAddr, addr)
	ops.mu.Unlock()
	if !ok || !od.at(now) {
		return refuse(operatorConflict, "zone %s: backend %s is not drained", p.cfg.zone, addr)
	}
	why := ""
	if od.reason != "" {
		why = ": " + od.reason
	}
	log.Infof("zone %s: backend %s: undrained by %s via the status API; answered again while healthy (drained since %s by %s%s)",
		p.cfg.zone, addr, by, od.since.Format(time.RFC3339), od.by, why)
	ops.rebuildAll()
	return nil
}

// failBackRefusal says why a fail-back changed nothing, family by family. Callers hold mu.
func (p *Pool) failBackRefusal() error {
	var why []string
	for fam, fo := range p.failover {
		groups := fo.Groups()
		switch groups.Len() {
		case 0:
			continue
		case 1:
			why = append(why, fmt.Sprintf("%s has one priority group (%s), nothing to fail back to", familyName(fam), groups))
			continue
		}
		serving, _ := fo.Serving()
		top, ok := fo.Healthy().Highest()
		if !ok {
			why = append(why, fmt.Sprintf("%s has no priority group with a healthy backend", familyName(fam)))
			continue
		}
		why = append(why, fmt.Sprintf("%s is served by group %s, the highest of %s with a healthy backend (%d)",
			familyName(fam), groupName(serving), groups, top))
	}
	if len(why) == 0 {
		why = append(why, "it has no backend")
	}
	return refuse(operatorConflict, "zone %s: nothing to fail back: %s", p.cfg.zone, strings.Join(why, "; "))
}

func untilSuffix(until time.Time) string {
	if until.IsZero() {
		return ""
	}
	return " until " + until.Format(time.RFC3339)
}
