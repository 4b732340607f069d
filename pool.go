package healthdns

import (
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
	prober health.Prober
	reg    *health.Registry

	snap  atomic.Pointer[snapshot]
	ready atomic.Bool // every backend has had its first verdict

	mu     sync.Mutex // serialises rebuilds; never taken on the query path
	leases []*health.Lease
	unsubs []func()
}

// snapshot is what the query path reads: one per address family, rebuilt on each transition.
type snapshot struct {
	v4, v6 family
}

// family is the answerable set of one address family. When every configured backend of the
// family is down, set holds all of them if all_down is serve_all, and allDown is true.
type family struct {
	set      *balance.Set
	ips      []net.IP             // set.Addrs as net.IP, made once so answers copy nothing
	answered []prometheus.Counter // per set index, resolved once so answers take no lock
	allDown  bool
}

func newPool(cfg poolConfig, policy balance.Policy, prober health.Prober, reg *health.Registry) *Pool {
	p := &Pool{cfg: cfg, policy: policy, prober: prober, reg: reg}
	p.zone = newZoneRecords(&p.cfg, serialNow())
	p.snap.Store(&snapshot{}) // until OnStartup: no address answers
	return p
}

// start acquires every backend's monitor, adopting running ones, and publishes the first snapshot.
func (p *Pool) start() {
	p.mu.Lock()
	for _, b := range p.cfg.backends {
		l := p.reg.Acquire(health.Target{Addr: b.addr, Spec: p.cfg.spec}, p.prober, p.cfg.zone)
		p.leases = append(p.leases, l)
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
	if len(leases) > 0 && !p.reg.Holds(p.cfg.zone) {
		allDownTotal.DeletePartialMatch(prometheus.Labels{"zone": p.cfg.zone})
	}
}

func (p *Pool) rebuild() {
	p.mu.Lock()
	defer p.mu.Unlock()
	old := p.snap.Load()
	var v4, v6 []int // indexes into cfg.backends
	var up4, up6 []int
	for i, b := range p.cfg.backends {
		up := i < len(p.leases) && p.leases[i].Up()
		gauge := 0.0
		if up {
			gauge = 1
		}
		backendUp.WithLabelValues(p.cfg.zone, b.addr.String()).Set(gauge)
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
	next := &snapshot{
		v4: p.family("ipv4", v4, up4, old.v4.allDown, settled),
		v6: p.family("ipv6", v6, up6, old.v6.allDown, settled),
	}
	p.snap.Store(next)
}

func (p *Pool) family(name string, configured, up []int, wasAllDown, settled bool) family {
	var f family
	members := up
	if settled && len(configured) > 0 && len(up) == 0 {
		f.allDown = true
		if !wasAllDown {
			allDownTotal.WithLabelValues(p.cfg.zone, name).Inc()
			log.Warningf("zone %s: every %s backend is down (%d configured): all_down %s", p.cfg.zone, name, len(configured), p.cfg.allDown)
		}
		if p.cfg.allDown == allDownServeAll {
			members = configured
		}
	} else if wasAllDown {
		log.Infof("zone %s: %d of %d %s backends up again", p.cfg.zone, len(up), len(configured), name)
	}
	addrs := make([]netip.Addr, len(members))
	weights := make([]uint32, len(members))
	f.ips = make([]net.IP, len(members))
	f.answered = make([]prometheus.Counter, len(members))
	for i, bi := range members {
		b := p.cfg.backends[bi]
		addrs[i], weights[i] = b.addr, b.weight
		f.ips[i] = net.IP(b.addr.AsSlice())
		f.answered[i] = answersTotal.WithLabelValues(p.cfg.zone, b.addr.String())
	}
	f.set = balance.NewSet(addrs, weights)
	return f
}
