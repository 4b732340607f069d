package pool

import (
	"maps"
	"slices"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/healthdns/healthdns/balance"
	"github.com/healthdns/healthdns/health"
)

// Status is a read-only view of a pool at one moment, for the status surface: a copy, which the
// pool no longer touches.
type Status struct {
	Config   Config
	AllDown  bool            // every backend in service is down (see Snapshot.AllDown)
	Families []FamilyStatus  // the families that have backends, ipv4 first
	Source   *SourceStatus   // the live list's source; nil for none
	Backends []BackendStatus // in the pool's order: the Corefile's, then the source's
}

// FamilyStatus is one address family's serving state.
type FamilyStatus struct {
	Family         string // "ipv4" or "ipv6"
	Configured, Up int
	Down           bool // every backend of the family is down
	AllDown        bool // the pool is all down and all_down decides this family's answers
	ServingDrained bool // the pool is all down and answers the family's healthy drained backends
	Serving        uint8
	Groups         balance.Groups // the priority groups listed
	Healthy        balance.Groups // those with a backend up
	PreemptWait    *PreemptWait   // a higher group waiting out preempt_delay; nil for none
	Agreement      *Agreement     // the fleet's agreement under nopreempt with etcd; nil otherwise
}

// PreemptWait is a higher group that takes back once its preempt_delay ends.
type PreemptWait struct {
	Group uint8
	Until time.Time
}

// Agreement is the fleet's agreed group of a family, as this server last read it.
type Agreement struct {
	Key       string
	Known     bool
	Group     uint8
	Revision  int64
	Connected bool
	Quorum    string // "" for fleet_quorum any
	Views     int    // live views at the last decision
	Disagrees uint8  // the agreed group while this server sees it down and the quorum keeps it
}

// SourceStatus is the live list's source: what it gave and how it fares.
type SourceStatus struct {
	Backends    int // in its last good list
	LastLoad    time.Time
	LastError   string
	LastErrorAt time.Time
	Errors      int
	Waiting     bool  // no list from it yet
	Connected   *bool // etcd: whether it is reachable; nil for a file
	Skipped     []SkippedKey
}

// SkippedKey is an etcd key the last list left out, and why.
type SkippedKey struct{ Key, Error string }

// BackendStatus is one backend: its line, its checks' status, and the drain that holds for it.
type BackendStatus struct {
	Backend
	Answers uint64          // address records served
	Checks  []health.Status // one per check, in the configuration's order
	// DrainedBy says which drain takes it out of the answers: "config" (its line, which an
	// undrain cannot lift, and so shown over an operator's), "api", or "" for none.
	DrainedBy string
	Drained   Drain     // the drain DrainedBy names
	Caller    string    // an API drain's caller
	Since     time.Time // and when it was set
}

// Server is the label of the server the pool answers on.
func (p *Pool) Server() string { return p.cfg.Server }

// Zone is the pool's zone, lower case and fully qualified.
func (p *Pool) Zone() string { return p.cfg.Zone }

// Snapshot is the answerable set as of the last rebuild, for the query path: it takes no lock.
func (p *Pool) Snapshot() *Snapshot { return p.snap.Load() }

// Status returns a view of the pool now. Leases are copied under the pool's mutex and read after
// it: a monitor's mutex comes before the pool's (a change's rebuild takes it).
func (p *Pool) Status() Status {
	st := Status{Config: p.cfg}
	snap := p.snap.Load()
	st.AllDown = snap.AllDown
	for fam, f := range [...]*Family{&snap.V4, &snap.V6} {
		if f.N == 0 {
			continue
		}
		fo := p.failover[fam]
		serving, _ := fo.Serving()
		p.mu.Lock()
		agreed := p.agreedStatusLocked(fam)
		p.mu.Unlock()
		fs := FamilyStatus{
			Family: familyName(fam), Configured: f.N, Up: f.NUp, Down: f.Down, AllDown: f.AllDown, ServingDrained: f.Drained,
			Serving: serving, Groups: fo.Groups(), Healthy: fo.Healthy(), Agreement: agreed,
		}
		if group, until, ok := fo.Waiting(); ok {
			fs.PreemptWait = &PreemptWait{Group: group, Until: until}
		}
		st.Families = append(st.Families, fs)
	}

	p.mu.Lock()
	if p.cfg.Source.Kind != SourceNone {
		ss := &SourceStatus{
			Backends: len(p.fromSrc), LastLoad: p.src.lastLoad, LastError: p.src.lastError,
			LastErrorAt: p.src.lastErrorAt, Errors: p.src.errors, Waiting: p.awaiting,
		}
		if p.cfg.Source.Kind == SourceEtcd {
			connected := p.src.connected
			ss.Connected = &connected
			for _, key := range slices.Sorted(maps.Keys(p.src.skipped)) {
				ss.Skipped = append(ss.Skipped, SkippedKey{Key: key, Error: p.src.skipped[key]})
			}
		}
		st.Source = ss
	}
	type copied struct {
		Backend
		leases   []*health.Lease
		drained  bool
		op       operatorDrain
		answered uint64
	}
	members := make([]copied, len(p.members))
	for i, m := range p.members {
		members[i] = copied{m.Backend, slices.Clone(m.leases), m.Drained, m.op, counterValue(m.Answered)}
	}
	p.mu.Unlock()
	st.Backends = make([]BackendStatus, 0, len(members))
	for _, m := range members {
		bs := BackendStatus{Backend: m.Backend, Answers: m.answered, Checks: make([]health.Status, 0, len(m.leases))}
		for _, l := range m.leases {
			bs.Checks = append(bs.Checks, l.Status())
		}
		switch {
		case m.drained:
			bs.DrainedBy, bs.Drained = "config", m.Drain
		case m.op.On:
			bs.DrainedBy, bs.Drained, bs.Caller, bs.Since = "api", m.op.Drain, m.op.by, m.op.since
		}
		st.Backends = append(st.Backends, bs)
	}
	return st
}

// counterValue reads a counter's value: a backend's answers, which the query path counts.
func counterValue(c interface{ Write(*dto.Metric) error }) uint64 {
	var d dto.Metric
	if c.Write(&d) != nil || d.Counter == nil {
		return 0
	}
	return uint64(d.Counter.GetValue())
}

// Scripts is how many exec checks the pool's first probes run: one per exec check of every
// backend listed, the live list's too (a backends file's, or etcd's once it came).
func (p *Pool) Scripts() int {
	checks := countOf(p.cfg.Checks, func(c health.Check) bool { return c.Kind == health.Exec })
	p.mu.Lock()
	defer p.mu.Unlock()
	return checks * (len(p.cfg.Backends) + len(p.fromSrc))
}
