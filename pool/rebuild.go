package pool

import (
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/healthdns/healthdns/balance"
	"github.com/healthdns/healthdns/event"
	"github.com/prometheus/client_golang/prometheus"
)

// Snapshot is what the query path reads: one per address family, rebuilt on each transition.
type Snapshot struct {
	V4, V6     Family
	AllDown    bool // every backend of the pool in service, of either family, is down
	LastResort bool // and healthy drained backends are answered instead (see rebuild)
	// unprobed is the count of backends in service whose first verdict is still out, while
	// the pool waits for its source's first list: answered as all down, but not known down.
	unprobed int
}

// Family is the answerable set of one address family: its up backends. all_down is decided for
// the pool, not per family: while the other family has a backend up, a family whose backends are
// all down answers nothing (NODATA), since serving its dead addresses would send dual-stack
// clients to them first, and failing the query would fail the name (musl's getaddrinfo returns
// "Try again" when either query fails). Only when the whole pool is down does allDown let the
// all_down mode decide, and set holds every configured backend under serve_all.
type Family struct {
	Set      *balance.Set
	Hash     *balance.HashTable   // consistent_hash's lookup of set, nil under other policies
	IPs      []net.IP             // set.Addrs as net.IP, made once so answers copy nothing
	Answered []prometheus.Counter // per set index, resolved once so answers take no lock
	AllDown  bool                 // the pool is all down and this family has backends: all_down decides
	Drained  bool                 // the pool is all down and answers this family's healthy drained backends
	Down     bool                 // every backend of this family is down (once all were checked)
	N, NUp   int                  // configured and up backends, for the log
}

func (p *Pool) rebuild() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stopped {
		return // a timer's rebuild after stop: the pool's series are gone and stay gone
	}
	old := p.snap.Load()
	p.drainsLocked(time.Now())
	if !p.settled && !p.awaiting && all(p.members, checked) {
		p.settled = true
		p.ready.Store(true)
	}
	settled := p.settled
	var v4, v6 []*member // the members in service: not drained, and checked once settled
	var up4, up6 []*member
	var drainedUp [2][]*member // drained and up: the last resort when nothing in service is up
	for _, m := range p.members {
		isUp := up(m)
		setGauge(m.upGauge, &m.upSet, isUp)
		p.upDownLocked(m, isUp)
		isUp = isUp || p.lastKnownUp(m) // answered, not reported: see lastKnownUp
		if m.outOfService() && isUp {
			drainedUp[familyIndex(m.Addr)] = append(drainedUp[familyIndex(m.Addr)], m)
		}
		// A drained backend is neither up nor down to the pool: it is out of service, so it
		// neither serves, nor makes its priority group healthy, nor counts towards all down.
		// A backend a new list added is not in service until its first verdict: it is never
		// answered before it was probed, nor counted as down before.
		inService := !m.outOfService() && (!settled || checked(m))
		setGauge(m.inServiceUpGauge, &m.inServiceUpSet, inService && isUp)
		if !inService {
			continue
		}
		if m.Addr.Is4() {
			v4 = append(v4, m)
			if isUp {
				up4 = append(up4, m)
			}
		} else {
			v6 = append(v6, m)
			if isUp {
				up6 = append(up6, m)
			}
		}
	}
	// Before every backend has its first verdict the pool is not all down, only unknown: no
	// all-down event is counted for it (and nothing is served from it: OnStartup waits). A pool
	// still waiting for its source's first list answers as all down, unless a Corefile backend
	// is up.
	// A pool with no backend at all (its source's list is empty) has nothing to answer either.
	noneUp := len(up4)+len(up6) == 0
	empty := p.awaiting || len(p.members) == 0
	poolDown := noneUp && (settled && len(v4)+len(v6) > 0 || empty)
	// Every backend in service down, a drained one healthy: a drain is an operator's request,
	// not a fault, so the healthy drained backends serve before all_down fails open to dead
	// ones (or fails the query). A pool whose every backend is drained is not down: it answers
	// nothing, as its operator asked.
	lastResort := poolDown && !empty && len(drainedUp[0])+len(drainedUp[1]) > 0
	serving4, serving6 := p.serveLocked(0, up4, settled), p.serveLocked(1, up6, settled)
	next := &Snapshot{
		V4:         p.familyOf(v4, up4, drainedUp[0], serving4, poolDown, lastResort, settled),
		V6:         p.familyOf(v6, up6, drainedUp[1], serving6, poolDown, lastResort, settled),
		AllDown:    poolDown,
		LastResort: lastResort,
	}
	if p.awaiting && noneUp {
		next.unprobed = countOf(slices.Concat(v4, v6), func(m *member) bool { return !checked(m) })
	}
	if empty && noneUp {
		// Nothing is known of either family: both answer as all_down says.
		next.V4.AllDown, next.V6.AllDown = true, true
	}
	p.report(old, next)
	p.snap.Store(next)
	p.published = true
	p.saveStateLocked(time.Now())
	p.armLocked()
}

// setGauge sets a member's 0/1 gauge when its value changes.
func setGauge(g prometheus.Gauge, last *int8, on bool) {
	v := int8(0)
	if on {
		v = 1
	}
	if *last != v {
		g.Set(float64(v))
		*last = v
	}
}

// serveLocked tells the family's failover which priority groups have a backend up, and returns
// the group to answer from. Only once every backend has its first verdict: under nopreempt the
// first decision stands, and a primary whose first probe is still out would lose to its standby.
// Until then the highest group with a backend up serves, as it will once decided.
func (p *Pool) serveLocked(fam int, up []*member, settled bool) uint8 {
	var healthy balance.Groups
	for _, m := range up {
		healthy.Add(m.Priority)
	}
	fo := p.failover[fam]
	if !settled {
		group, _ := healthy.Highest()
		return group
	}
	now := time.Now()
	sw := fo.Update(healthy, now)
	if !p.decided[fam] {
		sw = p.resumeServingLocked(fam, sw)
	}
	if fo.Groups().Len() == 0 {
		group, _ := fo.Serving()
		return group
	}
	// A family of one group has nothing to switch between: its all-down and recovery lines say
	// it all. Several groups' first choice is news, not a switch.
	switch {
	case !sw.Changed() || fo.Groups().Len() < 2:
	case !p.decided[fam]:
		log.Infof("zone %s: %s served by priority group %s: %s", p.cfg.Zone, familyName(fam), groupName(sw.To), sw.Reason)
	default:
		p.switched(fam, sw)
	}
	p.decided[fam] = true
	if p.agreeing() && fo.Groups().Len() > 1 {
		p.followAgreementLocked(fam, fo, sw, now)
	}
	group, _ := fo.Serving()
	p.metrics.ServingPriority.WithLabelValues(p.cfg.Server, p.cfg.Zone, familyName(fam)).Set(float64(group))
	p.higherHealthyLocked(fam, healthy, group)
	return group
}

// higherHealthyLocked logs, once, that a group above the serving one is healthy again while
// nopreempt keeps it waiting, and how to fail back: nothing else would tell an operator that
// the primary is back and that answers stay on the standby until they act.
func (p *Pool) higherHealthyLocked(fam int, healthy balance.Groups, serving uint8) {
	top, _ := healthy.Highest()
	if !p.cfg.Preempt.Never || serving == 0 || top <= serving {
		p.awaited[fam] = 0
		return
	}
	if p.awaited[fam] == top {
		return
	}
	p.awaited[fam] = top
	log.Infof("zone %s: %s priority group %d healthy again; staying on %d (nopreempt): fail back with %s",
		p.cfg.Zone, familyName(fam), top, serving, p.failBackWays(fam, top))
}

// failBackWays says how an operator fails this pool's family back to group: the ways its
// configuration offers (README, "Active and standby").
func (p *Pool) failBackWays(fam int, group uint8) string {
	var ways []string
	if api := p.cfg.FailBackAPI; api != "" {
		ways = append(ways, fmt.Sprintf(`POST /api/v1/failback {"zone": %q} on %s`, p.cfg.Zone, api))
	}
	if p.agreeing() {
		ways = append(ways, fmt.Sprintf("etcdctl put %s%s %d", p.cfg.Source.Etcd.Prefix, agreementKey(fam), group))
	}
	switch {
	case len(ways) == 0 && p.cfg.State.Path != "":
		return "a status listener with a token for POST /api/v1/failback (a reload keeps the serving group, and so does a restart, from the state file " + p.cfg.State.Path + ")"
	case len(ways) == 0:
		return "a restart (a reload keeps the serving group), or a status listener with a token for POST /api/v1/failback"
	}
	return strings.Join(ways, ", or ")
}

// switched logs, counts and publishes a switch of the family's serving group.
func (p *Pool) switched(fam int, sw balance.Switch) { p.switchedBy(fam, sw, "") }

// switchedBy is switched for a switch someone asked for: by names them in the event.
func (p *Pool) switchedBy(fam int, sw balance.Switch, by string) {
	p.metrics.GroupSwitchesTotal.WithLabelValues(p.cfg.Server, p.cfg.Zone, familyName(fam)).Inc()
	p.publish(event.Event{Kind: event.GroupSwitched, Family: familyName(fam),
		From: event.Group(sw.From), To: event.Group(sw.To), Why: sw.Reason, By: by})
	log.Warningf("zone %s: %s now served by priority group %s (was %s): %s",
		p.cfg.Zone, familyName(fam), groupName(sw.To), groupName(sw.From), sw.Reason)
}

func groupName(g uint8) string {
	if g == 0 {
		return "none"
	}
	return strconv.Itoa(int(g))
}

// armLocked sets the pool's timer to the failovers' next check: a group waiting out its
// preempt_delay takes back when the wait ends, whether or not a probe result comes then.
func (p *Pool) armLocked() {
	var next time.Time
	for _, fo := range p.failover {
		if at, ok := fo.NextCheck(); ok && (next.IsZero() || at.Before(next)) {
			next = at
		}
	}
	// A proposal to the fleet held back by its rate limit goes out when the limit ends.
	for _, a := range p.agree.fam {
		if at := a.retry; !at.IsZero() && (next.IsZero() || at.Before(next)) {
			next = at
		}
	}
	// A state unchanged for a while is saved again, so that its age tells how long the server
	// has been down (stateDue).
	if p.state != nil && !p.saved.Saved.IsZero() && (next.IsZero() || p.stateDue().Before(next)) {
		next = p.stateDue()
	}
	// A drain's end returns its backend when it comes, not at the next probe result.
	for _, m := range p.members {
		if at := m.Drain.Until; m.Drained && !at.IsZero() && (next.IsZero() || at.Before(next)) {
			next = at
		}
		if at := m.op.Until; m.op.On && !at.IsZero() && (next.IsZero() || at.Before(next)) {
			next = at
		}
	}
	if next.IsZero() {
		p.timer.Stop()
		return
	}
	p.timer.Reset(max(time.Until(next), 0))
}

func (p *Pool) familyOf(configured, up, drainedUp []*member, serving uint8, poolDown, lastResort, settled bool) Family {
	f := Family{
		AllDown: poolDown && len(configured) > 0,
		Down:    settled && len(configured) > 0 && len(up) == 0,
		N:       len(configured),
		NUp:     len(up),
	}
	// Answers come from the serving priority group alone; all down, serve_all serves the
	// highest group's addresses, where the primary is.
	members := inGroup(up, serving)
	switch {
	case lastResort:
		// The pool's last resort (see rebuild): the family's healthy drained backends, of their
		// highest group, and all_down does not decide. A family without one gets NODATA, as a
		// dead family beside a live one does.
		f.AllDown, f.Drained = false, len(drainedUp) > 0
		members = inGroup(drainedUp, highestPriority(drainedUp))
	case f.AllDown && p.cfg.AllDown == AllDownServeAll:
		members = inGroup(configured, highestPriority(configured))
	}
	addrs := make([]netip.Addr, len(members))
	weights := make([]uint32, len(members))
	f.IPs = make([]net.IP, len(members))
	f.Answered = make([]prometheus.Counter, len(members))
	for i, m := range members {
		addrs[i], weights[i] = m.Addr, m.Weight
		f.IPs[i] = net.IP(m.Addr.AsSlice())
		f.Answered[i] = m.Answered
	}
	f.Set = balance.NewSet(addrs, weights)
	// The table costs O(buckets × backends) (55 ms at 1,000 backends): not for the snapshots
	// of a pool whose first verdicts are still coming in one by one, which nothing answers from.
	if balance.IsKeyed(p.cfg.Policy) && settled {
		f.Hash = balance.NewHashTable(f.Set)
	}
	return f
}

// highestPriority returns the highest priority group of members.
func highestPriority(members []*member) uint8 {
	var highest uint8
	for _, m := range members {
		highest = max(highest, m.Priority)
	}
	return highest
}

// inGroup returns the members whose priority is group.
func inGroup(members []*member, group uint8) []*member {
	var out []*member
	for _, m := range members {
		if m.Priority == group {
			out = append(out, m)
		}
	}
	return out
}

// report counts each family that lost its last backend, and logs what the zone's address
// queries get from now on: NODATA for a dead family while the other has a backend up, or the
// all_down mode once the whole pool is down.
func (p *Pool) report(old, next *Snapshot) {
	fams := [...]struct {
		name, qtype string
		old, next   *Family
	}{{"ipv4", "A", &old.V4, &next.V4}, {"ipv6", "AAAA", &old.V6, &next.V6}}
	for i, f := range fams {
		switch {
		case f.next.Down && !f.old.Down:
			p.metrics.AllDownTotal.WithLabelValues(p.cfg.Server, p.cfg.Zone, f.name).Inc()
		case f.old.Down && !f.next.Down:
			log.Infof("zone %s: %d of %d %s backends up again", p.cfg.Zone, f.next.NUp, f.next.N, f.name)
		}
		// Said when the family dies beside a live one, and again when the pool comes back from
		// all down through the other family.
		if f.next.Down && !next.AllDown && (!f.old.Down || old.AllDown) {
			other := fams[1-i]
			log.Warningf("zone %s: every %s backend is down (%d configured); %s queries get NODATA while %d of %d %s backends are up",
				p.cfg.Zone, f.name, f.next.N, f.qtype, other.next.NUp, other.next.N, other.name)
		}
	}
	if p.published && next.AllDown != old.AllDown {
		kind := event.AllDownOver
		if next.AllDown {
			kind = event.AllDown
		}
		p.publish(event.Event{Kind: kind})
	}
	// Backends whose first probes were out are known down once the last comes back failed.
	if next.AllDown && (!old.AllDown || next.LastResort != old.LastResort || old.unprobed > 0 && next.unprobed == 0) {
		n := next.V4.N + next.V6.N
		switch {
		case next.LastResort:
			var served []string
			for _, ip := range slices.Concat(next.V4.IPs, next.V6.IPs) {
				served = append(served, ip.String())
			}
			log.Warningf("zone %s: every backend in service is down (%d in service, %d drained): answering the drained but healthy %s as a last resort",
				p.cfg.Zone, n, countOf(p.members, (*member).outOfService), listed(served))
		case n == 0 && p.awaiting:
			log.Warningf("zone %s: no backend yet: waiting for the first list from the %s, %s", p.cfg.Zone, p.cfg.Source, allDownAction(p.cfg.AllDown, n))
		case next.unprobed > 0:
			backends := "backend"
			if next.unprobed > 1 {
				backends = "backends"
			}
			log.Warningf("zone %s: no backend up yet: waiting for the first list from the %s and the first probe of %d configured %s: %s",
				p.cfg.Zone, p.cfg.Source, next.unprobed, backends, allDownAction(p.cfg.AllDown, n))
		case n == 0:
			log.Warningf("zone %s: no backend: the %s lists none, %s", p.cfg.Zone, p.cfg.Source, allDownAction(p.cfg.AllDown, n))
		default:
			log.Warningf("zone %s: every backend is down (%d configured): %s", p.cfg.Zone, n, allDownAction(p.cfg.AllDown, n))
		}
	}
}

// allDownAction says in the all-down log line what the zone answers now, so an operator knows
// whether dead addresses are being served:
//
//	zone app.lan.: every backend is down (3 configured): serving all 3 configured addresses anyway (all_down serve_all)
func allDownAction(mode AllDownMode, configured int) string {
	switch mode {
	case AllDownServfail:
		return "answering SERVFAIL to address queries (all_down servfail)"
	case AllDownFallthrough:
		return "passing address queries to the next plugin (all_down fallthrough)"
	}
	switch configured {
	case 0:
		return "answering NODATA to address queries (all_down serve_all, with no address to serve)"
	case 1:
		return "serving the 1 configured address anyway (all_down serve_all)"
	}
	return fmt.Sprintf("serving all %d configured addresses anyway (all_down serve_all)", configured)
}
