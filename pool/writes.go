package pool

import (
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/healthdns/healthdns/balance"
)

// RefusedError is a write the pool refuses, with the kind of refusal for the API's status code.
type RefusedError struct {
	Kind Refusal
	msg  string
}

type Refusal int

const (
	NotFound    Refusal = iota // no such backend in the zone
	Conflict                   // the write cannot apply to the state it finds
	Unavailable                // the pool is not running: starting, or replaced
	ReadOnly                   // the backend is listed where the API does not write
	Invalid                    // the write's values do not make a backend
)

func (e *RefusedError) Error() string { return e.msg }

func refuse(kind Refusal, format string, args ...any) error {
	return &RefusedError{Kind: kind, msg: fmt.Sprintf(format, args...)}
}

// memberLocked returns the member of address addr, or nil. Callers hold mu.
func (p *Pool) memberLocked(addr netip.Addr) *member {
	for _, m := range p.members {
		if m.Addr == addr {
			return m
		}
	}
	return nil
}

// runningLocked refuses a write to a pool that has not started or has stopped. Callers hold mu.
func (p *Pool) runningLocked() error {
	if p.ops == nil || p.stopped {
		return refuse(Unavailable, "zone %s is starting or being replaced by a reload; try again", p.cfg.Zone)
	}
	return nil
}

// configDrainLocked refuses a write on a backend that its configuration drains: that drain is
// lifted where it was set. Callers hold mu.
func (p *Pool) configDrainLocked(m *member, now time.Time) error {
	if !m.Drain.At(now) {
		return nil
	}
	return refuse(Conflict, "zone %s: backend %s is drained%s by %s%s; lift or change that drain there",
		p.cfg.Zone, m.Addr, untilSuffix(m.Drain.Until), p.listedBy(m.Addr), reasonSuffix(m.Drain.Reason))
}

// listedBy names where backend addr comes from: a backend line or the pool's source.
func (p *Pool) listedBy(addr netip.Addr) string {
	for _, b := range p.cfg.Backends {
		if b.Addr == addr {
			return "its backend line in the Corefile"
		}
	}
	return "the backends " + p.cfg.Source.String()
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
		return nil, refuse(NotFound, "zone %s has no backend %s", p.cfg.Zone, addr)
	}
	if err := p.configDrainLocked(m, now); err != nil {
		return nil, err
	}
	return p.ops, nil
}

// Drain takes backend addr out of the answers as a drain on its backend line would: probed, not
// answered, not counted down, until it is undrained or until d.until. The drain is the zone's,
// and the next pool of a reload applies it too. by names the caller for the log.
func (p *Pool) Drain(addr netip.Addr, d Drain, by string) error {
	now := time.Now()
	ops, err := p.operatorDrainsFor(addr, now)
	if err != nil {
		return err
	}
	d.On = true
	if p.cfg.Source.Kind == SourceEtcd {
		return p.writeFleetDrain(addr, d, by, now)
	}

	ops.mu.Lock()
	// A drain of a backend no longer listed never ends through a rebuild: sweep them here. A
	// minute late, so that a listed backend's end is left to the rebuild that logs it.
	for a, od := range ops.byAddr {
		if !od.At(now.Add(-time.Minute)) {
			delete(ops.byAddr, a)
		}
	}
	ops.byAddr[addr] = operatorDrain{Drain: d, by: by, since: now}
	delete(ops.lifters, addr)
	ops.mu.Unlock()
	log.Infof("zone %s: backend %s: drained%s by %s via the status API%s", p.cfg.Zone, addr, untilSuffix(d.Until), by, reasonSuffix(d.Reason))
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
	if p.cfg.Source.Kind == SourceEtcd {
		// Before the write, which the watch may bring back before it returns: this server's
		// event names the caller (the fleet's others say api).
		ops.mu.Lock()
		ops.lifted(addr, by)
		ops.mu.Unlock()
		err := p.writeFleetDrain(addr, Drain{}, by, now)
		if err != nil {
			ops.mu.Lock()
			delete(ops.lifters, addr)
			ops.mu.Unlock()
		}
		return err
	}

	ops.mu.Lock()
	od, ok := ops.byAddr[addr]
	delete(ops.byAddr, addr)
	if ok {
		ops.lifted(addr, by)
	}
	ops.mu.Unlock()
	if !ok || !od.At(now) {
		return refuse(Conflict, "zone %s: backend %s is not drained", p.cfg.Zone, addr)
	}
	why := ""
	if od.Reason != "" {
		why = ": " + od.Reason
	}
	log.Infof("zone %s: backend %s: undrained by %s via the status API; answered again while healthy (drained since %s by %s%s)",
		p.cfg.Zone, addr, by, od.since.Format(time.RFC3339), od.by, why)
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
	return refuse(Conflict, "zone %s: nothing to fail back: %s", p.cfg.Zone, strings.Join(why, "; "))
}

func untilSuffix(until time.Time) string {
	if until.IsZero() {
		return ""
	}
	return " until " + until.Format(time.RFC3339)
}

// FailBack makes, in each family of several priority groups, the highest group with a healthy
// backend serve again, as an operator asks under nopreempt once the primary is trusted; by names
// the operator for the log. When that changes nothing it says why, and changes nothing.
func (p *Pool) FailBack(by string) ([]FamilySwitch, error) {
	p.mu.Lock()
	if err := p.runningLocked(); err != nil {
		p.mu.Unlock()
		return nil, err
	}
	var done []FamilySwitch
	for fam, fo := range p.failover {
		if fo.Groups().Len() < 2 {
			continue
		}
		if sw := fo.FailBack(); sw.Changed() {
			sw.Reason = "fail-back by " + by + " via the status API"
			p.switchedBy(fam, sw, apiCaller(by))
			if p.agreeing() {
				p.decideOwnLocked(fam, failedBack) // the fleet follows, through etcd
			}
			done = append(done, FamilySwitch{familyName(fam), sw})
		}
	}
	if len(done) == 0 {
		err := p.failBackRefusal()
		p.mu.Unlock()
		return nil, err
	}
	p.mu.Unlock()
	p.rebuild()
	return done, nil
}

// FamilySwitch is a switch of one family's serving group.
type FamilySwitch struct {
	Family string
	balance.Switch
}
