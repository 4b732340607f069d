package pool

import (
	"context"
	"fmt"
	"hash/fnv"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/healthdns/healthdns/balance"
	"github.com/healthdns/healthdns/health"
	"github.com/prometheus/client_golang/prometheus"
)

// Pool is one zone's backends: it holds their health leases and publishes an immutable snapshot
// of the answerable set on every health change.
type Pool struct {
	cfg     Config
	metrics *Metrics
	reg     *health.Registry

	snap  atomic.Pointer[Snapshot]
	ready atomic.Bool // every backend has had its first verdict, and the source its first list

	// listMu serialises changes of the backend list (start, a source's new list, stop) and
	// guards each member's unsubs; it is taken before mu. Releasing a lease waits for its loop
	// to end, so it happens under listMu but never under mu, which a rebuild needs.
	listMu sync.Mutex

	mu       sync.Mutex           // serialises rebuilds; never taken on the query path
	members  []*member            // the Corefile's backends, then the source's, in their order
	fromSrc  []Backend            // the source's last good list
	awaiting bool                 // a source is configured and has not delivered a list yet
	listed   chan struct{}        // closed once the source has answered: its first list, or its first failure
	settled  bool                 // every member of the first full list has had its first verdict
	failover [2]*balance.Failover // which priority group serves, per family (ipv4, ipv6)
	decided  [2]bool              // the failover made its first choice
	awaited  [2]uint8             // the higher group nopreempt keeps waiting that was last logged healthy, 0 for none
	timer    *time.Timer          // a rebuild at the failovers' next check (preempt_delay) or a drain's end
	stopped  bool
	// published: the pool's first rebuild is done, and what it found is known; from then on a
	// drain or an all-down that changes is an event.
	published bool
	src       sourceState
	ops       *operatorDrains // the zone's drains set through the status API, from start on
	agree     agreement       // the fleet's serving groups, under nopreempt with etcd
	agreeWG   sync.WaitGroup

	// The state file (state.go), nil for none: what the pool resumed from it at start, and what
	// it last set there.
	state       *stateFile
	fingerprint string
	resume      resumed
	saved       zoneState

	dirty                        chan struct{} // a rebuild is wanted (capacity 1)
	rebuilderQuit, rebuilderDone chan struct{}

	srcCancel context.CancelFunc // ends the source's watch
	srcDone   chan struct{}      // closed when it has ended
}

// member is one backend of the current list with its health leases: a backend that stays
// across a list change keeps its member, and so its state and its probe loops.
type member struct {
	Backend
	leases  []*health.Lease // one per check, in cfg.checks order
	unsubs  []func()        // guarded by listMu
	Drained bool            // its drain held at the last rebuild
	info    drainInfo       // what its drain_info series says, guarded by Pool.mu

	// Its series, resolved once: looking them up by label values at every rebuild was most of a
	// rebuild's cost at 10,000 backends (bench/RESULTS.md, "Live backends at 10,000").
	upGauge, drainedGauge, inServiceUpGauge prometheus.Gauge
	Answered                                prometheus.Counter
	upSet, drainedSet, inServiceUpSet       int8          // what the gauges were last set to: -1 before the first rebuild
	op                                      operatorDrain // the operator's drain that held at the last rebuild, if any

	// verdict says whether wasUp holds the state last published, so that only a change after
	// the pool first saw one is an event: not a first verdict, nor a reload adopting a monitor.
	verdict, wasUp bool
}

// New makes the pool of cfg, whose backends reg probes and whose series are m's; nothing runs
// until Start.
func New(cfg Config, reg *health.Registry, m *Metrics) *Pool {
	// A file was read at setup (it must load for the server to start); etcd is awaited.
	p := &Pool{cfg: cfg, reg: reg, metrics: m, awaiting: cfg.Source.Kind == SourceEtcd, fromSrc: cfg.Source.Initial}
	p.dirty = make(chan struct{}, 1)
	p.listed = make(chan struct{})
	p.snap.Store(&Snapshot{}) // until OnStartup: no address answers
	for fam := range p.failover {
		p.failover[fam] = balance.NewFailover(groupsOf(cfg.Backends, fam), cfg.Preempt)
	}
	return p
}

// groupsOf returns the priority groups of family fam's backends.
func groupsOf(backends []Backend, fam int) balance.Groups {
	var groups balance.Groups
	for _, b := range backends {
		if familyIndex(b.Addr) == fam {
			groups.Add(b.Priority)
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
	for _, b := range p.cfg.Backends {
		if familyIndex(b.Addr) == fam {
			fmt.Fprintf(h, "%s %d\n", b.Addr, b.Priority)
		}
	}
	// A live list changes under the pool, so it is the source, not its list, that must be the
	// same; CarryOver still refuses a different set of groups.
	fmt.Fprintf(h, "source %s\n", p.cfg.Source)
	return fmt.Sprintf("failover %s %s %s %x", p.cfg.Server, p.cfg.Zone, familyName(fam), h.Sum64())
}

// Start acquires a monitor for every check of every backend, adopting running ones, and
// publishes the first snapshot.
func (p *Pool) Start() {
	p.listMu.Lock()
	defer p.listMu.Unlock()
	// etcd's list, as a reload's predecessor last loaded it, serves until etcd answers this pool.
	// Read before taking mu: the predecessor's mutex is its own, never held around ours.
	prevList, prevLoaded := p.predecessorList()
	p.mu.Lock()
	// The serving group a reload finds is kept (nopreempt must not fall back because the
	// Corefile was reloaded), when the backends and their priorities are the same.
	var carried [2]bool
	for fam, fo := range p.failover {
		key := p.failoverKey(fam)
		if prev, ok := p.reg.Kept(key); ok {
			carried[fam] = fo.CarryOver(prev.(*balance.Failover))
		}
		p.reg.Keep(key, fo)
	}
	p.timer = time.AfterFunc(time.Hour, p.rebuild)
	p.timer.Stop()
	p.rebuilderQuit, p.rebuilderDone = make(chan struct{}), make(chan struct{})
	go p.rebuilder(p.rebuilderQuit, p.rebuilderDone)
	if p.cfg.Source.Kind == SourceEtcd {
		if prevLoaded && p.awaiting {
			p.fromSrc, p.awaiting = prevList, false
		}
		p.reg.Keep(p.listKey(), p)
	}
	if !p.awaiting {
		p.heardLocked()
	}
	list := slices.Concat(p.cfg.Backends, p.fromSrc)
	p.setGroupsLocked(list)
	for _, b := range list {
		p.members = append(p.members, p.acquireLocked(b))
	}
	p.startDrainsLocked(time.Now())
	_, opsCarried := p.reg.Kept(p.operatorDrainsKey())
	p.startOperatorDrainsLocked(time.Now())
	p.resumeLocked(time.Now(), carried, !opsCarried)
	members := slices.Clone(p.members)
	p.mu.Unlock()
	p.subscribe(members)
	p.rebuild()
	p.startSource()
}

// acquireLocked makes b a member, with a lease on each of its checks. Callers hold mu.
func (p *Pool) acquireLocked(b Backend) *member {
	addr := b.Addr.String()
	m := &member{
		Backend:          b,
		upGauge:          p.metrics.BackendUp.WithLabelValues(p.cfg.Server, p.cfg.Zone, addr),
		drainedGauge:     p.metrics.BackendDrained.WithLabelValues(p.cfg.Server, p.cfg.Zone, addr),
		inServiceUpGauge: p.metrics.BackendInServiceUp.WithLabelValues(p.cfg.Server, p.cfg.Zone, addr),
		Answered:         p.metrics.AnswersTotal.WithLabelValues(p.cfg.Server, p.cfg.Zone, addr),
		upSet:            -1,
		drainedSet:       -1,
		inServiceUpSet:   -1,
	}
	owner := Owner(p.cfg.Server, p.cfg.Zone)
	for _, c := range p.cfg.Checks {
		m.leases = append(m.leases, p.reg.Acquire(health.Target{Addr: b.Addr, Spec: p.cfg.Spec.For(c)}, owner))
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
func (p *Pool) setGroupsLocked(list []Backend) {
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

// WaitListed waits until the pool's source has given its first list, or failed to, or until
// ctx ends. An etcd list comes a few milliseconds after start: answering before it would be a
// NODATA that resolvers cache for the SOA minimum, while etcd is there and has the list.
func (p *Pool) WaitListed(ctx context.Context) bool {
	select {
	case <-p.listed:
		return true
	case <-ctx.Done():
		return false
	}
}

// WaitChecked waits until every backend has its first verdict, or until ctx ends. A push
// check's is not waited for: it comes with the node's first report, or a TTL later, which the
// server's start must not wait on; until then the backend is not answered, and the pool is not
// Ready.
func (p *Pool) WaitChecked(ctx context.Context) bool {
	p.mu.Lock()
	var leases []*health.Lease
	for _, m := range p.members {
		for _, l := range m.leases {
			if !l.Pushed() {
				leases = append(leases, l)
			}
		}
	}
	p.mu.Unlock()
	for _, l := range leases {
		select {
		case <-l.Checked():
		case <-ctx.Done():
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

// Stop ends the pool: its source first (its deliveries take listMu), then its leases, whose
// last release stops a loop, then its rebuilder, each waited for. A second Stop does nothing.
func (p *Pool) Stop() {
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
	if p.cfg.Source.Kind == SourceEtcd {
		p.reg.Forget(p.listKey(), p)
	}
	p.stopOperatorDrainsLocked()
	state := p.state
	p.mu.Unlock()
	if state != nil {
		state.release(p)
	}
	p.release(members)
	if p.rebuilderQuit != nil { // after release: no monitor asks for a rebuild any more
		close(p.rebuilderQuit)
		<-p.rebuilderDone
		p.rebuilderQuit = nil // a second stop does nothing
	}
	// Releasing drops the per-backend series of the zone (Observer.Released); the zone's own go
	// once no configuration serves it, or a zone only a discarded reload named would keep them.
	if len(members) > 0 && !p.reg.Holds(Owner(p.cfg.Server, p.cfg.Zone)) {
		zoneLabels := prometheus.Labels{"server": p.cfg.Server, "zone": p.cfg.Zone}
		for _, series := range p.metrics.zoneSeries() {
			series.DeletePartialMatch(zoneLabels)
		}
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
