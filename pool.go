package healthdns

import (
	"fmt"
	"net"
	"net/netip"
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

	mu     sync.Mutex      // serialises rebuilds; never taken on the query path
	leases []*health.Lease // backend i's checks are leases[i*len(checks):][:len(checks)]
	unsubs []func()
}

// snapshot is what the query path reads: one per address family, rebuilt on each transition.
type snapshot struct {
	v4, v6  family
	allDown bool // every backend of the pool, of either family, is down
}

// family is the answerable set of one address family: its up backends. all_down is decided for
// the pool, not per family: while the other family has a backend up, a family whose backends are
// all down answers nothing (NODATA), since serving its dead addresses would send dual-stack
// clients to them first, and failing the query would fail the name (musl's getaddrinfo returns
// "Try again" when either query fails). Only when the whole pool is down does allDown let the
// all_down mode decide, and set holds every configured backend under serve_all.
type family struct {
	set      *balance.Set
	ips      []net.IP             // set.Addrs as net.IP, made once so answers copy nothing
	answered []prometheus.Counter // per set index, resolved once so answers take no lock
	allDown  bool                 // the pool is all down and this family has backends
	down     bool                 // every backend of this family is down (once all were checked)
	n, nUp   int                  // configured and up backends, for the log
}

func newPool(cfg poolConfig, policy balance.Policy, reg *health.Registry) *Pool {
	p := &Pool{cfg: cfg, policy: policy, reg: reg}
	p.zone = newZoneRecords(&p.cfg, configSerial(&p.cfg))
	p.snap.Store(&snapshot{}) // until OnStartup: no address answers
	return p
}

// start acquires a monitor for every check of every backend, adopting running ones, and
// publishes the first snapshot.
func (p *Pool) start() {
	p.mu.Lock()
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
	p.mu.Unlock()
	for _, l := range leases {
		l.Release()
	}
	// Releasing drops the per-backend series of the zone (Observer.Released); the zone's own go
	// once no configuration serves it, or a zone only a discarded reload named would keep them.
	if len(leases) > 0 && !p.reg.Holds(poolOwner(p.cfg.server, p.cfg.zone)) {
		allDownTotal.DeletePartialMatch(prometheus.Labels{"server": p.cfg.server, "zone": p.cfg.zone})
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
	old := p.snap.Load()
	var v4, v6 []int // indexes into cfg.backends
	var up4, up6 []int
	for i, b := range p.cfg.backends {
		up := p.upLocked(i)
		gauge := 0.0
		if up {
			gauge = 1
		}
		backendUp.WithLabelValues(p.cfg.server, p.cfg.zone, b.addr.String()).Set(gauge)
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
	poolDown := settled && len(p.cfg.backends) > 0 && len(up4)+len(up6) == 0
	next := &snapshot{
		v4:      p.family(v4, up4, poolDown, settled),
		v6:      p.family(v6, up6, poolDown, settled),
		allDown: poolDown,
	}
	p.report(old, next)
	p.snap.Store(next)
}

func (p *Pool) family(configured, up []int, poolDown, settled bool) family {
	f := family{
		allDown: poolDown && len(configured) > 0,
		down:    settled && len(configured) > 0 && len(up) == 0,
		n:       len(configured),
		nUp:     len(up),
	}
	members := up
	if f.allDown && p.cfg.allDown == allDownServeAll {
		members = configured
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
	return f
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
