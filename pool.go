package healthdns

import (
	"context"
	"fmt"
	"hash/fnv"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/healthdns/healthdns/balance"
	"github.com/healthdns/healthdns/health"
)

// Pool is one zone's backends: it holds their health leases and publishes an immutable snapshot
// of the answerable set on every health change.
type Pool struct {
	cfg    poolConfig
	zone   zoneRecords
	policy balance.Policy
	reg    *health.Registry

	snap  atomic.Pointer[snapshot]
	ready atomic.Bool // every backend has had its first verdict, and the source its first list

	// listMu serialises changes of the backend list (start, a source's new list, stop) and
	// guards each member's unsubs; it is taken before mu. Releasing a lease waits for its loop
	// to end, so it happens under listMu but never under mu, which a rebuild needs.
	listMu sync.Mutex

	mu       sync.Mutex           // serialises rebuilds; never taken on the query path
	members  []*member            // the Corefile's backends, then the source's, in their order
	fromSrc  []backend            // the source's last good list
	awaiting bool                 // a source is configured and has not delivered a list yet
	listed   chan struct{}        // closed once the source has answered: its first list, or its first failure
	settled  bool                 // every member of the first full list has had its first verdict
	failover [2]*balance.Failover // which priority group serves, per family (ipv4, ipv6)
	decided  [2]bool              // the failover made its first choice
	awaited  [2]uint8             // the higher group nopreempt keeps waiting that was last logged healthy, 0 for none
	timer    *time.Timer          // a rebuild at the failovers' next check (preempt_delay) or a drain's end
	stopped  bool
	src      sourceState
	ops      *operatorDrains // the zone's drains set through the status API, from start on
	agree    agreement       // the fleet's serving groups, under nopreempt with etcd
	agreeWG  sync.WaitGroup

	dirty                        chan struct{} // a rebuild is wanted (capacity 1)
	rebuilderQuit, rebuilderDone chan struct{}

	srcCancel context.CancelFunc // ends the source's watch
	srcDone   chan struct{}      // closed when it has ended
}

// member is one backend of the current list with its health leases: a backend that stays
// across a list change keeps its member, and so its state and its probe loops.
type member struct {
	backend
	leases  []*health.Lease // one per check, in cfg.checks order
	unsubs  []func()        // guarded by listMu
	drained bool            // its drain held at the last rebuild
	info    drainInfo       // what its drain_info series says, guarded by Pool.mu

	// Its series, resolved once: looking them up by label values at every rebuild was most of a
	// rebuild's cost at 10,000 backends (bench/RESULTS.md, "Live backends at 10,000").
	upGauge, drainedGauge, inServiceUpGauge prometheus.Gauge
	answered                                prometheus.Counter
	upSet, drainedSet, inServiceUpSet       int8          // what the gauges were last set to: -1 before the first rebuild
	op                                      operatorDrain // the operator's drain that held at the last rebuild, if any
}

// snapshot is what the query path reads: one per address family, rebuilt on each transition.
type snapshot struct {
	v4, v6     family
	allDown    bool // every backend of the pool in service, of either family, is down
	lastResort bool // and healthy drained backends are answered instead (see rebuild)
}

// family is the answerable set of one address family: its up backends. all_down is decided for
// the pool, not per family: while the other family has a backend up, a family whose backends are
// all down answers nothing (NODATA), since serving its dead addresses would send dual-stack
// clients to them first, and failing the query would fail the name (musl's getaddrinfo returns
// "Try again" when either query fails). Only when the whole pool is down does allDown let the
// all_down mode decide, and set holds every configured backend under serve_all.
type family struct {
	set      *balance.Set
	hash     *balance.HashTable   // consistent_hash's lookup of set, nil under other policies
	ips      []net.IP             // set.Addrs as net.IP, made once so answers copy nothing
	answered []prometheus.Counter // per set index, resolved once so answers take no lock
	allDown  bool                 // the pool is all down and this family has backends: all_down decides
	drained  bool                 // the pool is all down and answers this family's healthy drained backends
	down     bool                 // every backend of this family is down (once all were checked)
	n, nUp   int                  // configured and up backends, for the log
}

func newPool(cfg poolConfig, policy balance.Policy, reg *health.Registry) *Pool {
	// A file was read at setup (it must load for the server to start); etcd is awaited.
	p := &Pool{cfg: cfg, policy: policy, reg: reg, awaiting: cfg.source.kind == sourceEtcd, fromSrc: cfg.source.initial}
	p.dirty = make(chan struct{}, 1)
	p.listed = make(chan struct{})
	p.zone = newZoneRecords(&p.cfg, configSerial(&p.cfg))
	p.snap.Store(&snapshot{}) // until OnStartup: no address answers
	for fam := range p.failover {
		p.failover[fam] = balance.NewFailover(groupsOf(cfg.backends, fam), cfg.preempt)
	}
	return p
}

// groupsOf returns the priority groups of family fam's backends.
func groupsOf(backends []backend, fam int) balance.Groups {
	var groups balance.Groups
	for _, b := range backends {
		if familyIndex(b.addr) == fam {
			groups.Add(b.priority)
		}
	}
	return groups
}

// familyName is family fam's in metrics and logs.
func familyName(fam int) string {
	if fam == 0 {
		return "ipv4"
	}
	return "ipv6"
}

func familyIndex(a netip.Addr) int {
	if a.Is4() {
		return 0
	}
	return 1
}

// failoverKey names a family's failover in the registry, for the pool that follows this one in
// a reload: the same server, zone and family, and the same backends in the same priority groups.
func (p *Pool) failoverKey(fam int) string {
	h := fnv.New64a()
	for _, b := range p.cfg.backends {
		if familyIndex(b.addr) == fam {
			fmt.Fprintf(h, "%s %d\n", b.addr, b.priority)
		}
	}
	// A live list changes under the pool, so it is the source, not its list, that must be the
	// same; CarryOver still refuses a different set of groups.
	fmt.Fprintf(h, "source %s\n", p.cfg.source)
	return fmt.Sprintf("failover %s %s %s %x", p.cfg.server, p.cfg.zone, familyName(fam), h.Sum64())
}

// start acquires a monitor for every check of every backend, adopting running ones, and
// publishes the first snapshot.
func (p *Pool) start() {
	p.listMu.Lock()
	defer p.listMu.Unlock()
	// etcd's list, as a reload's predecessor last loaded it, serves until etcd answers this pool.
	// Read before taking mu: the predecessor's mutex is its own, never held around ours.
	prevList, prevLoaded := p.predecessorList()
	p.mu.Lock()
	// The serving group a reload finds is kept (nopreempt must not fall back because the
	// Corefile was reloaded), when the backends and their priorities are the same.
	for fam, fo := range p.failover {
		key := p.failoverKey(fam)
		if prev, ok := p.reg.Kept(key); ok {
			fo.CarryOver(prev.(*balance.Failover))
		}
		p.reg.Keep(key, fo)
	}
	p.timer = time.AfterFunc(time.Hour, p.rebuild)
	p.timer.Stop()
	p.rebuilderQuit, p.rebuilderDone = make(chan struct{}), make(chan struct{})
	go p.rebuilder(p.rebuilderQuit, p.rebuilderDone)
	if p.cfg.source.kind == sourceEtcd {
		if prevLoaded && p.awaiting {
			p.fromSrc, p.awaiting = prevList, false
		}
		p.reg.Keep(p.listKey(), p)
	}
	if !p.awaiting {
		p.heardLocked()
	}
	list := slices.Concat(p.cfg.backends, p.fromSrc)
	p.setGroupsLocked(list)
	for _, b := range list {
		p.members = append(p.members, p.acquireLocked(b))
	}
	p.startDrainsLocked(time.Now())
	p.startOperatorDrainsLocked(time.Now())
	members := slices.Clone(p.members)
	p.mu.Unlock()
	p.subscribe(members)
	p.rebuild()
	p.startSource()
}

// acquireLocked makes b a member, with a lease on each of its checks. Callers hold mu.
func (p *Pool) acquireLocked(b backend) *member {
	addr := b.addr.String()
	m := &member{
		backend:          b,
		upGauge:          backendUp.WithLabelValues(p.cfg.server, p.cfg.zone, addr),
		drainedGauge:     backendDrained.WithLabelValues(p.cfg.server, p.cfg.zone, addr),
		inServiceUpGauge: backendInServiceUp.WithLabelValues(p.cfg.server, p.cfg.zone, addr),
		answered:         answersTotal.WithLabelValues(p.cfg.server, p.cfg.zone, addr),
		upSet:            -1,
		drainedSet:       -1,
		inServiceUpSet:   -1,
	}
	owner := poolOwner(p.cfg.server, p.cfg.zone)
	for _, c := range p.cfg.checks {
		spec := p.cfg.spec
		spec.Check = c
		m.leases = append(m.leases, p.reg.Acquire(health.Target{Addr: b.addr, Spec: spec}, owner))
	}
	return m
}

// subscribe has each of the members' health changes rebuild the pool. Callers hold listMu, not mu.
func (p *Pool) subscribe(members []*member) {
	for _, m := range members {
		for _, l := range m.leases {
			m.unsubs = append(m.unsubs, l.Subscribe(p.rebuildSoon))
		}
	}
}

// release ends the members' leases. Callers hold listMu, not mu. Unsubscribing comes first:
// once it returns no rebuild runs for them, so releasing (which waits for loops to end)
// cannot wait on our own mutex.
func (p *Pool) release(members []*member) {
	for _, m := range members {
		for _, unsub := range m.unsubs {
			unsub()
		}
		m.unsubs = nil
	}
	for _, m := range members {
		for _, l := range m.leases {
			l.Release()
		}
	}
}

// setGroupsLocked tells each family's failover which priority groups the list has.
func (p *Pool) setGroupsLocked(list []backend) {
	for fam, fo := range p.failover {
		fo.SetGroups(groupsOf(list, fam))
	}
}

// heardLocked ends startup's wait for the pool's list: the source gave its first list (or the
// pool has none to wait for), or failed before giving one. Callers hold mu.
func (p *Pool) heardLocked() {
	select {
	case <-p.listed: // heard already
	default:
		close(p.listed)
	}
}

// waitListed waits until the pool's source has given its first list, or failed to, or until
// deadline. An etcd list comes a few milliseconds after start: answering before it would be a
// NODATA that resolvers cache for the SOA minimum, while etcd is there and has the list.
func (p *Pool) waitListed(deadline <-chan time.Time) bool {
	select {
	case <-p.listed:
		return true
	case <-deadline:
		return false
	}
}

// waitChecked waits until every backend has its first verdict, or until deadline.
func (p *Pool) waitChecked(deadline <-chan time.Time) bool {
	p.mu.Lock()
	var leases []*health.Lease
	for _, m := range p.members {
		leases = append(leases, m.leases...)
	}
	p.mu.Unlock()
	for _, l := range leases {
		select {
		case <-l.Checked():
		case <-deadline:
			return false
		}
	}
	p.rebuild()
	return true
}

// Ready reports whether every backend has had its first verdict, and a configured source has
// delivered its first list (the ready plugin holds traffic until then).
func (p *Pool) Ready() bool { return p.ready.Load() }

// checked reports whether member m has its first verdict on every check.
func checked(m *member) bool {
	for _, l := range m.leases {
		if !l.IsChecked() {
			return false
		}
	}
	return true
}

func (p *Pool) stop() {
	p.stopSource() // first: its deliveries take listMu
	p.listMu.Lock()
	defer p.listMu.Unlock()
	p.mu.Lock()
	members := p.members
	p.members = nil
	p.stopped = true
	if p.timer != nil {
		p.timer.Stop()
	}
	for fam, fo := range p.failover {
		p.reg.Forget(p.failoverKey(fam), fo)
	}
	if p.cfg.source.kind == sourceEtcd {
		p.reg.Forget(p.listKey(), p)
	}
	p.stopOperatorDrainsLocked()
	p.mu.Unlock()
	p.release(members)
	if p.rebuilderQuit != nil { // after release: no monitor asks for a rebuild any more
		close(p.rebuilderQuit)
		<-p.rebuilderDone
		p.rebuilderQuit = nil // a second stop does nothing
	}
	// Releasing drops the per-backend series of the zone (Observer.Released); the zone's own go
	// once no configuration serves it, or a zone only a discarded reload named would keep them.
	if len(members) > 0 && !p.reg.Holds(poolOwner(p.cfg.server, p.cfg.zone)) {
		zoneLabels := prometheus.Labels{"server": p.cfg.server, "zone": p.cfg.zone}
		allDownTotal.DeletePartialMatch(zoneLabels)
		servingPriority.DeletePartialMatch(zoneLabels)
		groupSwitchesTotal.DeletePartialMatch(zoneLabels)
		sourceErrorsTotal.DeletePartialMatch(zoneLabels)
		sourceLastLoad.DeletePartialMatch(zoneLabels)
		sourceLastError.DeletePartialMatch(zoneLabels)
		sourceConnected.DeletePartialMatch(zoneLabels)
		sourceSkippedKeys.DeletePartialMatch(zoneLabels)
	}
}

// up reports whether member m passes every one of its checks.
func up(m *member) bool {
	for _, l := range m.leases {
		if !l.Up() {
			return false
		}
	}
	return len(m.leases) > 0
}

// rebuildSoon asks the pool's rebuilder for a rebuild, and returns at once. Monitors call it
// from their probe loop's goroutine on every transition: a rebuild there would hold up every
// other probe of the loop for as long as it takes (at 10,000 backends in one pool, ten thousand
// first verdicts made ten thousand rebuilds, and startup took a minute and a half), and
// transitions that come while a rebuild runs are answered by one more rebuild, not one each.
func (p *Pool) rebuildSoon() {
	select {
	case p.dirty <- struct{}{}:
	default: // one is pending already, and will see this transition too
	}
}

// rebuilder runs the rebuilds rebuildSoon asks for, until stop.
func (p *Pool) rebuilder(quit <-chan struct{}, done chan<- struct{}) {
	defer close(done)
	for {
		select {
		case <-p.dirty:
			p.rebuild()
		case <-quit:
			return
		}
	}
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
		if m.outOfService() && isUp {
			drainedUp[familyIndex(m.addr)] = append(drainedUp[familyIndex(m.addr)], m)
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
		if m.addr.Is4() {
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
	next := &snapshot{
		v4:         p.family(v4, up4, drainedUp[0], serving4, poolDown, lastResort, settled),
		v6:         p.family(v6, up6, drainedUp[1], serving6, poolDown, lastResort, settled),
		allDown:    poolDown,
		lastResort: lastResort,
	}
	if empty && noneUp {
		// Nothing is known of either family: both answer as all_down says.
		next.v4.allDown, next.v6.allDown = true, true
	}
	p.report(old, next)
	p.snap.Store(next)
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

func countOf[T any](s []T, f func(T) bool) int {
	n := 0
	for _, v := range s {
		if f(v) {
			n++
		}
	}
	return n
}

func all[T any](s []T, f func(T) bool) bool {
	for _, v := range s {
		if !f(v) {
			return false
		}
	}
	return true
}

// serveLocked tells the family's failover which priority groups have a backend up, and returns
// the group to answer from. Only once every backend has its first verdict: under nopreempt the
// first decision stands, and a primary whose first probe is still out would lose to its standby.
// Until then the highest group with a backend up serves, as it will once decided.
func (p *Pool) serveLocked(fam int, up []*member, settled bool) uint8 {
	var healthy balance.Groups
	for _, m := range up {
		healthy.Add(m.priority)
	}
	fo := p.failover[fam]
	if !settled {
		group, _ := healthy.Highest()
		return group
	}
	now := time.Now()
	sw := fo.Update(healthy, now)
	if fo.Groups().Len() == 0 {
		group, _ := fo.Serving()
		return group
	}
	// A family of one group has nothing to switch between: its all-down and recovery lines say
	// it all. Several groups' first choice is news, not a switch.
	switch {
	case !sw.Changed() || fo.Groups().Len() < 2:
	case !p.decided[fam]:
		log.Infof("zone %s: %s served by priority group %s: %s", p.cfg.zone, familyName(fam), groupName(sw.To), sw.Reason)
	default:
		p.switched(fam, sw)
	}
	p.decided[fam] = true
	if p.agreeing() && fo.Groups().Len() > 1 {
		p.followAgreementLocked(fam, fo, sw, now)
	}
	group, _ := fo.Serving()
	servingPriority.WithLabelValues(p.cfg.server, p.cfg.zone, familyName(fam)).Set(float64(group))
	p.higherHealthyLocked(fam, healthy, group)
	return group
}

// higherHealthyLocked logs, once, that a group above the serving one is healthy again while
// nopreempt keeps it waiting, and how to fail back: nothing else would tell an operator that
// the primary is back and that answers stay on the standby until they act.
func (p *Pool) higherHealthyLocked(fam int, healthy balance.Groups, serving uint8) {
	top, _ := healthy.Highest()
	if !p.cfg.preempt.Never || serving == 0 || top <= serving {
		p.awaited[fam] = 0
		return
	}
	if p.awaited[fam] == top {
		return
	}
	p.awaited[fam] = top
	log.Infof("zone %s: %s priority group %d healthy again; staying on %d (nopreempt): fail back with %s",
		p.cfg.zone, familyName(fam), top, serving, p.failBackWays(fam, top))
}

// failBackWays says how an operator fails this pool's family back to group: the ways its
// configuration offers (README, "Active and standby").
func (p *Pool) failBackWays(fam int, group uint8) string {
	var ways []string
	if st := p.cfg.status; st.addr != "" && st.token != "" {
		ways = append(ways, fmt.Sprintf(`POST /api/v1/failback {"zone": %q} on %s`, p.cfg.zone, st.addr))
	}
	if p.agreeing() {
		ways = append(ways, fmt.Sprintf("etcdctl put %s%s %d", p.cfg.source.etcd.prefix, agreementKey(fam), group))
	}
	if len(ways) == 0 {
		return "a restart (a reload keeps the serving group), or a status listener with a token for POST /api/v1/failback"
	}
	return strings.Join(ways, ", or ")
}

// switched logs and counts a switch of the family's serving group.
func (p *Pool) switched(fam int, sw balance.Switch) {
	groupSwitchesTotal.WithLabelValues(p.cfg.server, p.cfg.zone, familyName(fam)).Inc()
	log.Warningf("zone %s: %s now served by priority group %s (was %s): %s",
		p.cfg.zone, familyName(fam), groupName(sw.To), groupName(sw.From), sw.Reason)
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
	// A drain's end returns its backend when it comes, not at the next probe result.
	for _, m := range p.members {
		if at := m.drain.until; m.drained && !at.IsZero() && (next.IsZero() || at.Before(next)) {
			next = at
		}
		if at := m.op.until; m.op.on && !at.IsZero() && (next.IsZero() || at.Before(next)) {
			next = at
		}
	}
	if next.IsZero() {
		p.timer.Stop()
		return
	}
	p.timer.Reset(max(time.Until(next), 0))
}

// startDrainsLocked logs each drained backend once, at start, with its reason and end, and sets
// its gauge. A drain whose end has passed is said to be over, since the Corefile still asks for it.
func (p *Pool) startDrainsLocked(now time.Time) {
	for _, m := range p.members {
		p.startDrainLocked(m, now)
	}
}

// startDrainLocked applies member m's drain as it starts: at start, or when a new list drains it.
func (p *Pool) startDrainLocked(m *member, now time.Time) {
	d := m.drain
	if !d.on {
		return
	}
	m.drained = d.at(now)
	switch {
	case !m.drained:
		log.Infof("zone %s: backend %s: drain ended at %s, before it was applied; answered while healthy%s",
			p.cfg.zone, m.addr, d.until.Format(time.RFC3339), reasonSuffix(d.reason))
	case d.until.IsZero():
		log.Infof("zone %s: backend %s: drained, probed but not answered%s", p.cfg.zone, m.addr, reasonSuffix(d.reason))
	default:
		log.Infof("zone %s: backend %s: drained until %s, probed but not answered%s",
			p.cfg.zone, m.addr, d.until.Format(time.RFC3339), reasonSuffix(d.reason))
	}
}

// drainsLocked ends each drain whose time came since the last rebuild, logging it, and sets
// the drained gauge. Callers hold mu.
func (p *Pool) drainsLocked(now time.Time) {
	p.operatorDrainsLocked(now)
	for _, m := range p.members {
		if m.drained && !m.drain.at(now) {
			m.drained = false
			log.Infof("zone %s: backend %s: drain ended at %s; answered again while healthy%s",
				p.cfg.zone, m.addr, m.drain.until.Format(time.RFC3339), reasonSuffix(m.drain.reason))
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
	case m.drained:
		info = newDrainInfo(m.drain, "config")
	case m.op.on:
		info = newDrainInfo(m.op.drain, "api")
	}
	if info == m.info {
		return
	}
	if m.info.on {
		backendDrainInfo.DeleteLabelValues(p.cfg.server, p.cfg.zone, m.addr.String(), m.info.reason, m.info.until, m.info.by)
	}
	if info.on {
		backendDrainInfo.WithLabelValues(p.cfg.server, p.cfg.zone, m.addr.String(), info.reason, info.until, info.by).Set(1)
	}
	m.info = info
}

// drainInfo is what drain_info's labels say of a drain.
type drainInfo struct {
	on                bool
	reason, until, by string
}

// newDrainInfo bounds the reason, free text, to keep a label a reasonable size.
func newDrainInfo(d drain, by string) drainInfo {
	info := drainInfo{on: true, reason: d.reason, by: by}
	if r := []rune(info.reason); len(r) > 64 {
		info.reason = string(r[:63]) + "…"
	}
	if !d.until.IsZero() {
		info.until = d.until.UTC().Format(time.RFC3339)
	}
	return info
}

func reasonSuffix(reason string) string {
	if reason == "" {
		return ""
	}
	return " (" + reason + ")"
}

// FailBack makes, in each family of several priority groups, the highest group with a healthy
// backend serve again, as an operator asks under nopreempt once the primary is trusted; by names
// the operator for the log. When that changes nothing it says why, and changes nothing.
func (p *Pool) FailBack(by string) ([]familySwitch, error) {
	p.mu.Lock()
	if err := p.runningLocked(); err != nil {
		p.mu.Unlock()
		return nil, err
	}
	var done []familySwitch
	for fam, fo := range p.failover {
		if fo.Groups().Len() < 2 {
			continue
		}
		if sw := fo.FailBack(); sw.Changed() {
			sw.Reason = "fail-back by " + by + " via the status API"
			p.switched(fam, sw)
			if p.agreeing() {
				p.decideOwnLocked(fam, failedBack) // the fleet follows, through etcd
			}
			done = append(done, familySwitch{familyName(fam), sw})
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

// familySwitch is a switch of one family's serving group.
type familySwitch struct {
	family string
	balance.Switch
}

func (p *Pool) family(configured, up, drainedUp []*member, serving uint8, poolDown, lastResort, settled bool) family {
	f := family{
		allDown: poolDown && len(configured) > 0,
		down:    settled && len(configured) > 0 && len(up) == 0,
		n:       len(configured),
		nUp:     len(up),
	}
	// Answers come from the serving priority group alone; all down, serve_all serves the
	// highest group's addresses, where the primary is.
	members := inGroup(up, serving)
	switch {
	case lastResort:
		// The pool's last resort (see rebuild): the family's healthy drained backends, of their
		// highest group, and all_down does not decide. A family without one gets NODATA, as a
		// dead family beside a live one does.
		f.allDown, f.drained = false, len(drainedUp) > 0
		members = inGroup(drainedUp, highestPriority(drainedUp))
	case f.allDown && p.cfg.allDown == allDownServeAll:
		members = inGroup(configured, highestPriority(configured))
	}
	addrs := make([]netip.Addr, len(members))
	weights := make([]uint32, len(members))
	f.ips = make([]net.IP, len(members))
	f.answered = make([]prometheus.Counter, len(members))
	for i, m := range members {
		addrs[i], weights[i] = m.addr, m.weight
		f.ips[i] = net.IP(m.addr.AsSlice())
		f.answered[i] = m.answered
	}
	f.set = balance.NewSet(addrs, weights)
	// The table costs O(buckets × backends) (55 ms at 1,000 backends): not for the snapshots
	// of a pool whose first verdicts are still coming in one by one, which nothing answers from.
	if balance.IsKeyed(p.cfg.policy) && settled {
		f.hash = balance.NewHashTable(f.set)
	}
	return f
}

// highestPriority returns the highest priority group of members.
func highestPriority(members []*member) uint8 {
	var highest uint8
	for _, m := range members {
		highest = max(highest, m.priority)
	}
	return highest
}

// inGroup returns the members whose priority is group.
func inGroup(members []*member, group uint8) []*member {
	var out []*member
	for _, m := range members {
		if m.priority == group {
			out = append(out, m)
		}
	}
	return out
}

// report counts each family that lost its last backend, and logs what the zone's address
// queries get from now on: NODATA for a dead family while the other has a backend up, or the
// all_down mode once the whole pool is down.
func (p *Pool) report(old, next *snapshot) {
	fams := [...]struct {
		name, qtype string
		old, next   *family
	}{{"ipv4", "A", &old.v4, &next.v4}, {"ipv6", "AAAA", &old.v6, &next.v6}}
	for i, f := range fams {
		switch {
		case f.next.down && !f.old.down:
			allDownTotal.WithLabelValues(p.cfg.server, p.cfg.zone, f.name).Inc()
		case f.old.down && !f.next.down:
			log.Infof("zone %s: %d of %d %s backends up again", p.cfg.zone, f.next.nUp, f.next.n, f.name)
		}
		// Said when the family dies beside a live one, and again when the pool comes back from
		// all down through the other family.
		if f.next.down && !next.allDown && (!f.old.down || old.allDown) {
			other := fams[1-i]
			log.Warningf("zone %s: every %s backend is down (%d configured); %s queries get NODATA while %d of %d %s backends are up",
				p.cfg.zone, f.name, f.next.n, f.qtype, other.next.nUp, other.next.n, other.name)
		}
	}
	if next.allDown && (!old.allDown || next.lastResort != old.lastResort) {
		n := next.v4.n + next.v6.n
		switch {
		case next.lastResort:
			var served []string
			for _, ip := range slices.Concat(next.v4.ips, next.v6.ips) {
				served = append(served, ip.String())
			}
			log.Warningf("zone %s: every backend in service is down (%d in service, %d drained): answering the drained but healthy %s as a last resort",
				p.cfg.zone, n, countOf(p.members, (*member).outOfService), listed(served))
		case n == 0 && p.awaiting:
			log.Warningf("zone %s: no backend yet: waiting for the first list from the %s, %s", p.cfg.zone, p.cfg.source, allDownAction(p.cfg.allDown, n))
		case n == 0:
			log.Warningf("zone %s: no backend: the %s lists none, %s", p.cfg.zone, p.cfg.source, allDownAction(p.cfg.allDown, n))
		default:
			log.Warningf("zone %s: every backend is down (%d configured): %s", p.cfg.zone, n, allDownAction(p.cfg.allDown, n))
		}
	}
}

// allDownAction says in the all-down log line what the zone answers now, so an operator knows
// whether dead addresses are being served:
//
//	zone app.lan.: every backend is down (3 configured): serving all 3 configured addresses anyway (all_down serve_all)
func allDownAction(mode allDownMode, configured int) string {
	switch mode {
	case allDownServfail:
		return "answering SERVFAIL to address queries (all_down servfail)"
	case allDownFallthrough:
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

// setSourceList makes list the source's part of the pool's backends. A backend that stays keeps
// its member (its health state and its probe loops) and takes its new weight, priority and
// drain; a new one is probed and not answered before its first verdict; a removed one stops
// being answered now, its loops stop unless another pool probes it too, and its series go.
// Before start it only records the list, which start then uses.
func (p *Pool) setSourceList(list []backend) {
	p.listMu.Lock()
	defer p.listMu.Unlock()
	p.mu.Lock()
	if p.stopped {
		p.mu.Unlock()
		return
	}
	first := p.awaiting
	p.fromSrc, p.awaiting = list, false
	if p.timer == nil { // not started
		p.mu.Unlock()
		return
	}
	now := time.Now()
	want := slices.Concat(p.cfg.backends, list)
	have := make(map[netip.Addr]*member, len(p.members))
	for _, m := range p.members {
		have[m.addr] = m
	}
	next := make([]*member, 0, len(want))
	var added []*member
	var addedAddrs, changedAddrs, removedAddrs []string
	for _, b := range want {
		m, ok := have[b.addr]
		if !ok {
			m = p.acquireLocked(b)
			p.startDrainLocked(m, now)
			added = append(added, m)
			addedAddrs = append(addedAddrs, b.addr.String())
			next = append(next, m)
			continue
		}
		delete(have, b.addr)
		next = append(next, m)
		if sameBackend(m.backend, b) {
			continue
		}
		changedAddrs = append(changedAddrs, b.addr.String())
		drainChanged := !sameDrain(m.drain, b.drain)
		m.backend = b
		switch {
		case drainChanged && b.drain.on:
			p.startDrainLocked(m, now)
		case drainChanged && m.drained:
			m.drained = false
			log.Infof("zone %s: backend %s: undrained by the %s; answered again while healthy", p.cfg.zone, m.addr, p.cfg.source)
		}
	}
	var removed []*member
	for _, m := range p.members {
		if _, gone := have[m.addr]; gone {
			removed = append(removed, m)
			removedAddrs = append(removedAddrs, m.addr.String())
		}
	}
	p.members = next
	p.setGroupsLocked(want)
	p.heardLocked() // after the members: startup waits for the first verdicts of these
	p.mu.Unlock()

	p.release(removed)
	p.subscribe(added)
	if first || len(addedAddrs)+len(changedAddrs)+len(removedAddrs) > 0 {
		changes := []string{fmt.Sprintf("the %s lists %d", p.cfg.source, len(list))}
		for _, c := range []struct {
			what  string
			addrs []string
		}{{"added", addedAddrs}, {"removed", removedAddrs}, {"changed", changedAddrs}} {
			if len(c.addrs) > 0 {
				changes = append(changes, c.what+" "+listed(c.addrs))
			}
		}
		log.Infof("zone %s: backends: %s; %d in all", p.cfg.zone, strings.Join(changes, ", "), len(next))
	}
	p.rebuild()
}

// listed says how many addresses, and which when few, for a log line: "2 (10.0.0.7, 10.0.0.9)".
func listed(addrs []string) string {
	const shown = 5
	switch {
	case len(addrs) == 0:
		return "0"
	case len(addrs) <= shown:
		return fmt.Sprintf("%d (%s)", len(addrs), strings.Join(addrs, ", "))
	}
	return fmt.Sprintf("%d (%s, ...)", len(addrs), strings.Join(addrs[:shown], ", "))
}

func sameBackend(a, b backend) bool {
	return a.addr == b.addr && a.weight == b.weight && a.priority == b.priority && sameDrain(a.drain, b.drain)
}

func sameDrain(a, b drain) bool {
	return a.on == b.on && a.until.Equal(b.until) && a.reason == b.reason
}
