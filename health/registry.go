package health

import (
	"context"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/healthdns/healthdns/health/internal/engine"
)

// Registry shares one Monitor per Target between every pool that asks for it, counting leases so
// that the loop outlives any one holder. It is what lets a Corefile reload keep health state: the
// new plugin instance acquires before the old one releases, so running loops are adopted with
// their rise/fall state instead of starting cold.
//
// A reload that fails discards the new instance without running its shutdown, so what the new
// instance starts while a reload is under way is recorded in a generation (its stop functions,
// which release its leases and unsubscribe from the monitors) that AbortGeneration stops.
type Registry struct {
	obs Observer

	mu       sync.Mutex
	monitors map[Target]*Monitor
	owned    map[ownedAddr]int  // leases per (owner, address), for Observer.Released
	probed   map[probedAddr]int // loops per (address, check), for Observer.Stopped
	pending  []func()           // stop functions of what started since OpenGeneration
	open     bool
	loops                   // one per wire, made at first use
	retries  *engine.Budget // shared by every loop
	scripts  *engine.Turns  // how many exec checks run at once

	kept map[string][]any // what holders hand over to their successors across a reload, newest last; see Keep

	connectOnly bool                                    // TCP checks connect even with CAP_NET_RAW
	probe       func(context.Context, netip.Addr) error // WithProbe's
	notice      func(line string)                       // WithNotice's
}

// Option changes how a Registry probes.
type Option func(*Registry)

// WithProbe makes every check of the registry run probe instead, on the blocking wire: for the
// tests of what sits above this package, which decide which backends answer.
func WithProbe(probe func(ctx context.Context, addr netip.Addr) error) Option {
	return func(r *Registry) { r.probe = probe }
}

// WithConnect makes TCP checks connect even where the process could send half-open SYNs.
func WithConnect() Option {
	return func(r *Registry) { r.connectOnly = true }
}

// WithNotice has the registry tell notice, once per kind of check and when the first check of
// that kind starts, how those checks probe and why: with a raw socket or without, as the
// process's capabilities and sysctls allow.
func WithNotice(notice func(line string)) Option {
	return func(r *Registry) { r.notice = notice }
}

type ownedAddr struct {
	owner string
	addr  netip.Addr
}

type probedAddr struct {
	addr  netip.Addr
	check Check
}

// NewRegistry returns an empty registry that reports to obs.
func NewRegistry(obs Observer, opts ...Option) *Registry {
	r := &Registry{
		obs:      obs,
		retries:  engine.NewBudget(),
		scripts:  engine.NewTurns(DefaultExecConcurrency),
		monitors: map[Target]*Monitor{},
		owned:    map[ownedAddr]int{},
		probed:   map[probedAddr]int{},
		kept:     map[string][]any{},
		notice:   func(string) {},
	}
	for _, opt := range opts {
		opt(r)
	}
	return r
}

// DefaultExecConcurrency is how many exec checks of a registry run at once unless
// SetExecConcurrency says otherwise: enough for a host of a few cores, where each script is a
// process or two (a shell, a curl) that starts in milliseconds. A script that finds them all
// running waits for its turn; its timeout counts from when it starts.
const DefaultExecConcurrency = 32

// SetExecConcurrency sets how many exec checks run at once, from then on: raised, waiting
// scripts start at once; lowered, running ones finish first.
func (r *Registry) SetExecConcurrency(n int) { r.scripts.SetLimit(n) }

// ExecStats says how the registry's scripts have waited for their turn.
type ExecStats struct {
	Concurrency int           // how many may run at once
	Running     int           // scripts running now
	Waiting     int           // scripts waiting for their turn now
	Waits       uint64        // scripts that had to wait, since the registry was made
	Waited      time.Duration // how long they waited, in all
}

// ExecStats returns how the registry's scripts have waited for their turn.
func (r *Registry) ExecStats() ExecStats {
	st := r.scripts.Stats()
	return ExecStats{Concurrency: st.Limit, Running: st.Running, Waiting: st.Waiting, Waits: st.Waits, Waited: st.Waited}
}

// Lease is one holder's claim on a Monitor.
type Lease struct {
	*Monitor
	owner    string
	reg      *Registry
	released bool // guarded by reg.mu
}

// Acquire returns a lease on the monitor of t, scheduling t on its wire's loop if no one probes
// it yet. owner names the holder for Observer.Released and Change.Owners.
func (r *Registry) Acquire(t Target, owner string) *Lease {
	r.mu.Lock()
	defer r.mu.Unlock()
	m, ok := r.monitors[t]
	if !ok {
		loop, probe := r.wireLocked(t)
		m = newMonitor(t, loop, probe, r.obs)
		r.monitors[t] = m
		r.probed[probedAddr{t.Addr, t.Spec.Check}]++
	}
	m.countOwnerLocked(owner, 1)
	if !ok {
		m.start() // once its owner is known, which the first verdict's Change names
	}
	m.refs++
	r.owned[ownedAddr{owner, t.Addr}]++
	return &Lease{Monitor: m, owner: owner, reg: r}
}

// Release gives the lease back; the last release of a target stops its loop and waits for it.
// Releasing twice is harmless.
func (l *Lease) Release() {
	r := l.reg
	m := l.Monitor
	t := m.target
	r.mu.Lock()
	if l.released {
		r.mu.Unlock()
		return
	}
	l.released = true
	m.countOwnerLocked(l.owner, -1)
	ownerGone := decrement(r.owned, ownedAddr{l.owner, t.Addr})
	m.refs--
	stop := m.refs == 0
	checkGone := false
	if stop {
		delete(r.monitors, t)
		checkGone = decrement(r.probed, probedAddr{t.Addr, t.Spec.Check})
	}
	r.mu.Unlock()

	if stop {
		m.stop() // outside the lock: a probe may take up to its timeout to return
	}
	if ownerGone {
		r.obs.Released(l.owner, t.Addr)
	}
	if checkGone {
		r.obs.Stopped(t.Addr, t.Spec.Check)
	}
}

func decrement[K comparable](counts map[K]int, k K) (gone bool) {
	counts[k]--
	if counts[k] > 0 {
		return false
	}
	delete(counts, k)
	return true
}

// OpenGeneration starts recording what starts, for a reload about to run. It is idempotent.
func (r *Registry) OpenGeneration() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.open {
		r.open = true
		r.pending = nil
	}
}

// Started records stop as the way to undo something that started (a plugin instance's pools)
// while a generation is open, for AbortGeneration. Outside a reload it does nothing: a first
// start that fails ends the process.
//
// It records stop functions rather than leases because releasing a discarded holder's leases is
// not enough: a lease whose monitor another holder keeps running still calls the discarded
// holder back on every change, which then logs, counts and exports series for a configuration
// that is not served.
func (r *Registry) Started(stop func()) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.open {
		r.pending = append(r.pending, stop)
	}
}

// CommitGeneration keeps what started since OpenGeneration: its owner will stop it.
func (r *Registry) CommitGeneration() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.open = false
	r.pending = nil
}

// AbortGeneration stops, newest first, everything that started since OpenGeneration: its owner
// was discarded and will never stop it.
func (r *Registry) AbortGeneration() {
	r.mu.Lock()
	pending := r.pending
	r.open = false
	r.pending = nil
	r.mu.Unlock()
	for i := len(pending) - 1; i >= 0; i-- {
		pending[i]()
	}
}

// Holds reports whether any lease of owner is held.
func (r *Registry) Holds(owner string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for k := range r.owned {
		if k.owner == owner {
			return true
		}
	}
	return false
}

// Keep hands v over under key to whoever starts next with the same key: state that is not a
// monitor's but must outlive a plugin instance all the same, such as the priority group a pool
// serves under nopreempt. The new instance of a reload starts while the old one still runs, so
// it finds what the old one kept.
func (r *Registry) Keep(key string, v any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.kept[key] = append(r.kept[key], v)
}

// Kept returns what the newest holder still running kept under key.
func (r *Registry) Kept(key string) (any, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	vs := r.kept[key]
	if len(vs) == 0 {
		return nil, false
	}
	return vs[len(vs)-1], true
}

// Forget drops v from what was kept under key, as its holder stops. What a successor kept stays,
// and so does what a predecessor kept when the successor is a failed reload's: the next reload
// then finds the running holder's state.
func (r *Registry) Forget(key string, v any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	vs := slices.DeleteFunc(r.kept[key], func(x any) bool { return x == v })
	if len(vs) == 0 {
		delete(r.kept, key)
		return
	}
	r.kept[key] = vs
}

// Lookup returns the monitor probing t, if any.
func (r *Registry) Lookup(t Target) (*Monitor, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	m, ok := r.monitors[t]
	return m, ok
}

// Len returns how many targets are being probed.
func (r *Registry) Len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.monitors)
}
