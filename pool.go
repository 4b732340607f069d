package healthdns

import (
	"fmt"
	"hash/fnv"
	"net"
	"net/netip"
	"slices"
	"strconv"
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
	ready atomic.Bool // every backend has had its first verdict

	mu       sync.Mutex      // serialises rebuilds; never taken on the query path
	leases   []*health.Lease // backend i's checks are leases[i*len(checks):][:len(checks)]
	unsubs   []func()
	failover [2]*balance.Failover // which priority group serves, per family (ipv4, ipv6)
	decided  [2]bool              // the failover made its first choice
	timer    *time.Timer          // a rebuild at the failovers' next check (preempt_delay) or a drain's end
	drained  []bool               // per backend, its drain held at the last rebuild
	stopped  bool
}

// snapshot is what the query path reads: one per address family, rebuilt on each transition.
type snapshot struct {
	v4, v6  family
	allDown bool   // every backend of the pool, of either family, is down
	drained []bool // per backend, for the status page; nil before start
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
	allDown  bool                 // the pool is all down and this family has backends
	down     bool                 // every backend of this family is down (once all were checked)
	n, nUp   int                  // configured and up backends, for the log
}

func newPool(cfg poolConfig, policy balance.Policy, reg *health.Registry) *Pool {
	p := &Pool{cfg: cfg, policy: policy, reg: reg, drained: make([]bool, len(cfg.backends))}
	p.zone = newZoneRecords(&p.cfg, configSerial(&p.cfg))
	p.snap.Store(&snapshot{}) // until OnStartup: no address answers
	for fam := range p.failover {
		var groups balance.Groups
		for _, b := range cfg.backends {
			if familyIndex(b.addr) == fam {
				groups.Add(b.priority)
			}
		}
		p.failover[fam] = balance.NewFailover(groups, cfg.preempt)
	}
	return p
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
	return fmt.Sprintf("failover %s %s %s %x", p.cfg.server, p.cfg.zone, familyName(fam), h.Sum64())
}

// start acquires a monitor for every check of every backend, adopting running ones, and
// publishes the first snapshot.
func (p *Pool) start() {
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
	p.startDrainsLocked(time.Now())
	owner := poolOwner(p.cfg.server, p.cfg.zone)
	for _, b := range p.cfg.backends {
		for _, c := range p.cfg.checks {
			spec := p.cfg.spec
			spec.Check = c
			p.leases = append(p.leases, p.reg.Acquire(health.Target{Addr: b.addr, Spec: spec}, owner))
		}
	}
	p.mu.Unlock()
	// Not under mu: a monitor holds its subscriber lock while it calls rebuild, which takes mu.
	for _, l := range p.leases {
		p.unsubs = append(p.unsubs, l.Subscribe(p.rebuild))
	}
	p.rebuild()
}

// waitChecked waits until every backend has its first verdict, or until deadline.
func (p *Pool) waitChecked(deadline <-chan time.Time) bool {
	for _, l := range p.leases {
		select {
		case <-l.Checked():
		case <-deadline:
			return false
		}
	}
	p.rebuild()
	return true
}

// Ready reports whether every backend has had its first verdict.
func (p *Pool) Ready() bool { return p.ready.Load() }

// checked reports whether every backend has its first verdict. Callers hold mu.
func (p *Pool) checked() bool {
	for _, l := range p.leases {
		if !l.IsChecked() {
			return false
		}
	}
	return true
}

func (p *Pool) stop() {
	// Unsubscribe first: once that returns no rebuild is running or will run, so releasing
	// (which waits for loops to end) cannot wait on our own mutex.
	for _, unsub := range p.unsubs {
		unsub()
	}
	p.mu.Lock()
	leases := p.leases
	p.unsubs, p.leases = nil, nil
	p.stopped = true
	if p.timer != nil {
		p.timer.Stop()
	}
	for fam, fo := range p.failover {
		p.reg.Forget(p.failoverKey(fam), fo)
	}
	p.mu.Unlock()
	for _, l := range leases {
		l.Release()
	}
	// Releasing drops the per-backend series of the zone (Observer.Released); the zone's own go
	// once no configuration serves it, or a zone only a discarded reload named would keep them.
	if len(leases) > 0 && !p.reg.Holds(poolOwner(p.cfg.server, p.cfg.zone)) {
		zoneLabels := prometheus.Labels{"server": p.cfg.server, "zone": p.cfg.zone}
		allDownTotal.DeletePartialMatch(zoneLabels)
		servingPriority.DeletePartialMatch(zoneLabels)
		groupSwitchesTotal.DeletePartialMatch(zoneLabels)
	}
}

// upLocked reports whether backend i passes every one of its checks. Callers hold mu.
func (p *Pool) upLocked(i int) bool {
	n := len(p.cfg.checks)
	if (i+1)*n > len(p.leases) {
		return false // not started, or stopped
	}
	for _, l := range p.leases[i*n : (i+1)*n] {
		if !l.Up() {
			return false
		}
	}
	return true
}

func (p *Pool) rebuild() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stopped {
		return // a timer's rebuild after stop: the pool's series are gone and stay gone
	}
	old := p.snap.Load()
	drained := p.drainsLocked(time.Now())
	var v4, v6 []int // indexes into cfg.backends, of the backends in service (not drained)
	var up4, up6 []int
	for i, b := range p.cfg.backends {
		up := p.upLocked(i)
		gauge := 0.0
		if up {
			gauge = 1
		}
		backendUp.WithLabelValues(p.cfg.server, p.cfg.zone, b.addr.String()).Set(gauge)
		// A drained backend is neither up nor down to the pool: it is out of service, so it
		// neither serves, nor makes its priority group healthy, nor counts towards all down.
		if drained[i] {
			continue
		}
		if b.addr.Is4() {
			v4 = append(v4, i)
			if up {
				up4 = append(up4, i)
			}
		} else {
			v6 = append(v6, i)
			if up {
				up6 = append(up6, i)
			}
		}
	}
	// Before every backend has its first verdict the pool is not all down, only unknown: no
	// all-down event is counted for it (and nothing is served from it: OnStartup waits).
	settled := p.checked()
	if settled {
		p.ready.Store(true)
	}
	poolDown := settled && len(v4)+len(v6) > 0 && len(up4)+len(up6) == 0
	serving4, serving6 := p.serveLocked(0, up4, settled), p.serveLocked(1, up6, settled)
	next := &snapshot{
		v4:      p.family(v4, up4, serving4, poolDown, settled),
		v6:      p.family(v6, up6, serving6, poolDown, settled),
		allDown: poolDown,
		drained: drained,
	}
	p.report(old, next)
	p.snap.Store(next)
	p.armLocked()
}

// serveLocked tells the family's failover which priority groups have a backend up, and returns
// the group to answer from. Only once every backend has its first verdict: under nopreempt the
// first decision stands, and a primary whose first probe is still out would lose to its standby.
// Until then the highest group with a backend up serves, as it will once decided.
func (p *Pool) serveLocked(fam int, up []int, settled bool) uint8 {
	var healthy balance.Groups
	for _, i := range up {
		healthy.Add(p.cfg.backends[i].priority)
	}
	fo := p.failover[fam]
	if !settled {
		group, _ := healthy.Highest()
		return group
	}
	sw := fo.Update(healthy, time.Now())
	group, ok := fo.Serving()
	if !ok {
		group = 0
	}
	if fo.Groups().Len() == 0 {
		return group
	}
	servingPriority.WithLabelValues(p.cfg.server, p.cfg.zone, familyName(fam)).Set(float64(group))
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
	return group
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
	// A drain's end returns its backend when it comes, not at the next probe result.
	for i, b := range p.cfg.backends {
		if at := b.drain.until; p.drained[i] && !at.IsZero() && (next.IsZero() || at.Before(next)) {
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
	for i, b := range p.cfg.backends {
		d := b.drain
		if !d.on {
			continue
		}
		p.drained[i] = d.at(now)
		switch {
		case !p.drained[i]:
			log.Infof("zone %s: backend %s: drain ended at %s, before startup; answered while healthy%s",
				p.cfg.zone, b.addr, d.until.Format(time.RFC3339), reasonSuffix(d.reason))
		case d.until.IsZero():
			log.Infof("zone %s: backend %s: drained, probed but not answered%s", p.cfg.zone, b.addr, reasonSuffix(d.reason))
		default:
			log.Infof("zone %s: backend %s: drained until %s, probed but not answered%s",
				p.cfg.zone, b.addr, d.until.Format(time.RFC3339), reasonSuffix(d.reason))
		}
	}
}

// drainsLocked returns which backends are drained at now, logging each drain that ended since
// the last rebuild, and sets the drained gauge. Callers hold mu.
func (p *Pool) drainsLocked(now time.Time) []bool {
	drained := make([]bool, len(p.cfg.backends))
	for i, b := range p.cfg.backends {
		drained[i] = p.drained[i] && b.drain.at(now)
		if p.drained[i] && !drained[i] {
			log.Infof("zone %s: backend %s: drain ended at %s; answered again while healthy%s",
				p.cfg.zone, b.addr, b.drain.until.Format(time.RFC3339), reasonSuffix(b.drain.reason))
		}
		gauge := 0.0
		if drained[i] {
			gauge = 1
		}
		backendDrained.WithLabelValues(p.cfg.server, p.cfg.zone, b.addr.String()).Set(gauge)
	}
	p.drained = drained
	return slices.Clone(drained)
}

func reasonSuffix(reason string) string {
	if reason == "" {
		return ""
	}
	return " (" + reason + ")"
}

// FailBack makes the highest priority group with a healthy backend serve again, as an operator
// asks under nopreempt once the primary is trusted.
func (p *Pool) FailBack() {
	p.mu.Lock()
	for fam, fo := range p.failover {
		if sw := fo.FailBack(); sw.Changed() {
			p.switched(fam, sw)
		}
	}
	p.mu.Unlock()
	p.rebuild()
}

func (p *Pool) family(configured, up []int, serving uint8, poolDown, settled bool) family {
	f := family{
		allDown: poolDown && len(configured) > 0,
		down:    settled && len(configured) > 0 && len(up) == 0,
		n:       len(configured),
		nUp:     len(up),
	}
	// Answers come from the serving priority group alone; all down, serve_all serves the
	// highest group's addresses, where the primary is.
	members := inGroup(p.cfg.backends, up, serving)
	if f.allDown && p.cfg.allDown == allDownServeAll {
		var highest uint8
		for _, i := range configured {
			highest = max(highest, p.cfg.backends[i].priority)
		}
		members = inGroup(p.cfg.backends, configured, highest)
	}
	addrs := make([]netip.Addr, len(members))
	weights := make([]uint32, len(members))
	f.ips = make([]net.IP, len(members))
	f.answered = make([]prometheus.Counter, len(members))
	for i, bi := range members {
		b := p.cfg.backends[bi]
		addrs[i], weights[i] = b.addr, b.weight
		f.ips[i] = net.IP(b.addr.AsSlice())
		f.answered[i] = answersTotal.WithLabelValues(p.cfg.server, p.cfg.zone, b.addr.String())
	}
	f.set = balance.NewSet(addrs, weights)
	// The table costs O(buckets × backends) (55 ms at 1,000 backends): not for the snapshots
	// of a pool whose first verdicts are still coming in one by one, which nothing answers from.
	if balance.IsKeyed(p.cfg.policy) && settled {
		f.hash = balance.NewHashTable(f.set)
	}
	return f
}

// inGroup returns the backends of idx whose priority is group.
func inGroup(backends []backend, idx []int, group uint8) []int {
	var out []int
	for _, i := range idx {
		if backends[i].priority == group {
			out = append(out, i)
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
	if next.allDown && !old.allDown {
		log.Warningf("zone %s: every backend is down (%d configured): %s", p.cfg.zone, len(p.cfg.backends), allDownAction(p.cfg.allDown, len(p.cfg.backends)))
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
	if configured == 1 {
		return "serving the 1 configured address anyway (all_down serve_all)"
	}
	return fmt.Sprintf("serving all %d configured addresses anyway (all_down serve_all)", configured)
}
