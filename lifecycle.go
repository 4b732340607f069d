package healthdns

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/coredns/caddy"

	"github.com/healthdns/healthdns/health"
	"github.com/healthdns/healthdns/notify"
	"github.com/healthdns/healthdns/pool"
	"github.com/healthdns/healthdns/status"
)

// startMargin is how long past the longest probe timeout startup waits for first verdicts: a
// probe starts a little after its loop does, and its verdict is recorded a little after it ends.
const startMargin = time.Second

// lifecycleKey keys an instance's lifecycle in caddy's per-instance storage.
type lifecycleKey struct{}

// lifecycle starts and stops the pools of every server block of one caddy instance together.
// caddy runs OnStartup callbacks one after another, so a callback per server block, each waiting
// for its own first verdicts, made a Corefile of 20 blocks with a dead backend each wait 20
// timeouts before it served anything. One callback per instance starts every pool and waits
// once. It lives in the instance's storage, not in a package variable: a reload builds a new
// instance, and the old one's pools are stopped by the old one's OnShutdown.
type lifecycle struct {
	reg      *health.Registry
	listener *status.Listeners
	pools    []*zonePool    // every block's, in setup order
	status   []*status.View // one per status address the instance's pools name, in setup order
	notify   []notify.Scope // the notify lines of every block's zones

	execConcurrency int    // exec_concurrency, 0 when no block gives it
	execAt          string // where it was given, "FILE:LINE"

	mu       sync.Mutex
	stopped  bool
	acquired []*status.View // the views start registered with their listeners
	notified *notify.Lease  // the notify targets start acquired; nil before
	watched  bool           // start acquired the stall watchdog
}

// lifecycleOf returns the lifecycle of c's instance. The first healthdns block of an instance
// creates it and registers its callbacks, once for the whole instance.
func lifecycleOf(c *caddy.Controller, p *process) *lifecycle {
	if l, ok := c.Get(lifecycleKey{}).(*lifecycle); ok {
		return l
	}
	reg := p.targets
	l := &lifecycle{reg: reg, listener: p.status}
	c.Set(lifecycleKey{}, l)
	c.OnStartup(l.start)
	c.OnShutdown(l.shutdown)
	// These run on the instance being replaced, around the reload that replaces it: they are
	// how a new instance that caddy discards (without its OnShutdown) gets stopped.
	c.OnRestart(func() error { reg.OpenGeneration(); return nil })
	c.OnRestartFailed(func() error { reg.AbortGeneration(); return nil })
	return l
}

// add makes h's pools start and stop with the instance.
func (l *lifecycle) add(h *HealthDNS) {
	for _, p := range h.pools {
		l.pools = append(l.pools, p)
	}
}

// addStatus shows p on the status listener of sc.addr. Pools of one instance that name the same
// address share its listener, and so must agree on its token and its certificate.
func (l *lifecycle) addStatus(sc status.Config, p *zonePool) error {
	for _, v := range l.status {
		if v.Addr != sc.Addr {
			continue
		}
		if v.Token != sc.Token {
			return fmt.Errorf("%s:%d - Error during parsing: status %s: token differs from the one of %s:%d; pools that share a status listener share its token",
				sc.File, sc.Line, sc.Addr, v.File, v.Line)
		}
		if tlsFiles(v.TLS) != tlsFiles(sc.TLS) {
			return fmt.Errorf("%s:%d - Error during parsing: status %s: tls %s differs from tls %s of %s:%d; pools that share a status listener share its certificate",
				sc.File, sc.Line, sc.Addr, tlsFiles(sc.TLS), tlsFiles(v.TLS), v.File, v.Line)
		}
		v.Pools = append(v.Pools, p.shown())
		return nil
	}
	l.status = append(l.status, &status.View{Config: sc, Pools: []status.Shown{p.shown()}, Loops: l.reg.Loops,
		Process: status.Process{Version: caddy.AppVersion, Started: proc.started}, Events: proc.events()})
	return nil
}

// tlsFiles names a status line's certificate as the line does: "CERT KEY", or "none".
func tlsFiles(t *status.TLS) string {
	if t == nil {
		return "none"
	}
	return t.CertFile + " " + t.KeyFile
}

// setExecConcurrency takes cfg's exec_concurrency. It bounds the scripts of every pool of the
// process, since they all run on one host: blocks that give it must agree, so that no block's
// value silently wins.
func (l *lifecycle) setExecConcurrency(c *caddy.Controller, cfg poolConfig) error {
	n := cfg.execConcurrency
	switch {
	case n == 0 || n == l.execConcurrency:
		return nil
	case l.execConcurrency != 0:
		return errAt(c, cfg.execConcurrencyLine, "exec_concurrency %d differs from exec_concurrency %d of %s: it bounds the scripts of the whole process; give one value",
			n, l.execConcurrency, l.execAt)
	}
	l.execConcurrency, l.execAt = n, fmt.Sprintf("%s:%d", c.File(), cfg.execConcurrencyLine)
	return nil
}

// execLimit is how many scripts the instance runs at once: its exec_concurrency, or the default.
func (l *lifecycle) execLimit() int {
	if l.execConcurrency != 0 {
		return l.execConcurrency
	}
	return health.DefaultExecConcurrency
}

// start is the instance's OnStartup. Probe loops and status listeners start here, never in
// setup: a reload that fails in setup then has nothing to undo, and one that fails later undoes
// this through the registry's generation (docs/DESIGN.md, "Reload, precisely").
func (l *lifecycle) start() error {
	l.reg.Started(l.stop) // first, so that even a start cut short is undone
	// The instance running before a reload is the newest one kept: a failed reload's was
	// forgotten when it was undone.
	if prev, ok := l.reg.Kept(lifecycleKeep); ok {
		for _, line := range reloadChanges(configsOf(prev.(*lifecycle).pools), configsOf(l.pools)) {
			log.Info(line)
		}
	}
	l.reg.Keep(lifecycleKeep, l)
	// Before the pools start: their first scripts run under the new limit. A reload that drops
	// exec_concurrency goes back to the default.
	l.reg.SetExecConcurrency(l.execLimit())
	// Listeners before probes: an address in use fails the start before anything probes. A
	// listener the replaced instance holds is shared, not opened again.
	for _, v := range l.status {
		if err := l.listener.Acquire(v); err != nil {
			return err
		}
		l.mu.Lock()
		l.acquired = append(l.acquired, v)
		l.mu.Unlock()
	}
	// Before the pools start, so that their first transitions are delivered. Targets the
	// replaced instance runs with the same line are shared, queue and all: an event published
	// during the reload reaches them once.
	l.mu.Lock()
	l.notified = proc.notify.Acquire(proc.events(), l.notify)
	proc.stalls.acquire(l, l.reg, proc.events())
	l.watched = true
	l.mu.Unlock()
	startPools(l.pools, l.reg)
	return nil
}

// shutdown is the instance's OnShutdown.
func (l *lifecycle) shutdown() error {
	l.stop()
	// Reaching here on a reload means the new instance started: what it started is its own now.
	l.reg.CommitGeneration()
	return nil
}

// stop stops every pool; loops a newer instance adopted keep running. It runs once, whether from
// OnShutdown or from an aborted reload.
func (l *lifecycle) stop() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.stopped {
		return
	}
	l.stopped = true
	l.reg.Forget(lifecycleKeep, l)
	// The limit is the process's, and this instance set it: a failed reload is undone while the
	// instance it was to replace runs on, whose limit holds again. (After a reload that
	// succeeded the running instance is the new one, whose limit holds already.)
	if running, ok := l.reg.Kept(lifecycleKeep); ok {
		l.reg.SetExecConcurrency(running.(*lifecycle).execLimit())
	}
	for _, v := range l.acquired {
		l.listener.Release(v)
	}
	l.acquired = nil
	for _, p := range l.pools {
		p.pool.Stop()
	}
	// After the pools: their last events are published, and the targets this instance alone
	// held stop (a reload dropped their line).
	if l.notified != nil {
		l.notified.Release()
	}
	if l.watched {
		proc.stalls.release(l)
	}
}

// shown is the zone as the status surface shows it.
func (p *zonePool) shown() status.Shown {
	return status.Shown{Pool: p.pool, Answers: p.cfg.answers, TTL: p.cfg.ttl, Serial: p.zone.soa.Serial}
}

// lifecycleKeep keys the running instance's lifecycle in the registry, for the reload that
// follows it to say what changed.
const lifecycleKeep = "lifecycle"

func configsOf(pools []*zonePool) []*poolConfig {
	cfgs := make([]*poolConfig, len(pools))
	for i, p := range pools {
		cfgs[i] = &p.cfg
	}
	return cfgs
}

// reloadChanges says what a reload changed, a line per pool added, removed or changed in its
// Corefile backends, checks or live list's source, so that an operator sees at once whether the
// Corefile they reloaded is the one they meant:
//
//	reload: zone app.lan. (dns://:53): backends added 10.0.0.9, removed 10.0.0.7; checks added http :8080 /healthz
//
// A reload that changes none of these says so, in one line.
func reloadChanges(prev, next []*poolConfig) []string {
	key := func(c *poolConfig) string { return c.Zone + " (" + c.Server + ")" }
	old := map[string]*poolConfig{}
	for _, c := range prev {
		old[key(c)] = c
	}
	var lines []string
	for _, c := range next {
		k := key(c)
		was, kept := old[k]
		delete(old, k)
		if !kept {
			what := []string{fmt.Sprintf("%d backends", len(c.Backends))}
			if len(c.Backends) > 0 {
				what[0] = "backends " + named(backendAddrs(c.Backends))
			}
			if c.Source.Kind != pool.SourceNone {
				what = append(what, "and the "+c.Source.String())
			}
			lines = append(lines, fmt.Sprintf("reload: zone %s added: %s; checks %s", k, strings.Join(what, " "), strings.Join(checkNames(c), ", ")))
			continue
		}
		var changes []string
		if added, removed := difference(backendAddrs(was.Backends), backendAddrs(c.Backends)); len(added)+len(removed) > 0 {
			changes = append(changes, "backends"+addedRemoved(added, removed))
		}
		if added, removed := difference(checkNames(was), checkNames(c)); len(added)+len(removed) > 0 {
			changes = append(changes, "checks"+addedRemoved(added, removed))
		}
		if was.Source.String() != c.Source.String() {
			changes = append(changes, fmt.Sprintf("live list from %s, was %s", orNone(c.Source.String()), orNone(was.Source.String())))
		}
		if len(changes) > 0 {
			lines = append(lines, fmt.Sprintf("reload: zone %s: %s", k, strings.Join(changes, "; ")))
		}
	}
	for _, c := range prev {
		if _, gone := old[key(c)]; gone {
			lines = append(lines, fmt.Sprintf("reload: zone %s removed", key(c)))
		}
	}
	if len(lines) == 0 {
		lines = append(lines, "reload: no zone, backend line or check changed")
	}
	return lines
}

func backendAddrs(bs []pool.Backend) []string {
	out := make([]string, len(bs))
	for i, b := range bs {
		out[i] = b.Addr.String()
	}
	return out
}

func checkNames(c *poolConfig) []string {
	out := make([]string, len(c.Checks))
	for i, ch := range c.Checks {
		out[i] = ch.String()
	}
	return out
}

// difference returns what next has that prev has not, and what prev has that next has not,
// each in its own order.
func difference(prev, next []string) (added, removed []string) {
	in := func(list []string) map[string]bool {
		set := make(map[string]bool, len(list))
		for _, s := range list {
			set[s] = true
		}
		return set
	}
	inPrev, inNext := in(prev), in(next)
	for _, n := range next {
		if !inPrev[n] {
			added = append(added, n)
		}
	}
	for _, p := range prev {
		if !inNext[p] {
			removed = append(removed, p)
		}
	}
	return added, removed
}

func addedRemoved(added, removed []string) string {
	var parts []string
	if len(added) > 0 {
		parts = append(parts, "added "+named(added))
	}
	if len(removed) > 0 {
		parts = append(parts, "removed "+named(removed))
	}
	return " " + strings.Join(parts, ", ")
}

// named lists a few names in full, and says how many of many: a Corefile of 10,000 backends
// must not make a reload's line 10,000 addresses long.
func named(names []string) string {
	const shown = 5
	if len(names) <= shown {
		return strings.Join(names, ", ")
	}
	return fmt.Sprintf("%d (%s, ...)", len(names), strings.Join(names[:shown], ", "))
}

func orNone(s string) string {
	if s == "" {
		return "the Corefile alone"
	}
	return s
}

// scriptRounds is how long the pools' first scripts may take when they wait for their turns:
// a timeout per round of the registry's exec concurrency. Every listed backend runs them, the
// live list's too (a backends file's, or etcd's once it came), not only the Corefile's.
func scriptRounds(pools []*zonePool, concurrency int) time.Duration {
	var scripts int
	var timeout time.Duration
	for _, p := range pools {
		if n := p.pool.Scripts(); n > 0 {
			scripts += n
			timeout = max(timeout, p.cfg.Spec.Timeout)
		}
	}
	if scripts == 0 {
		return 0
	}
	return time.Duration((scripts+concurrency-1)/concurrency) * timeout
}

// firstListWait bounds how long startup waits for the pools' live lists from etcd: a read of
// the prefix fails after 2 s (source/etcd.go), so an etcd that is down or refuses the server
// is known by then, and the server starts without its list (answering as all_down says).
const firstListWait = 2*time.Second + startMargin

// startPools acquires every pool's probe loops (adopting those a previous instance runs), so
// that all first probes run together, waits for the live lists from etcd (whose backends are
// probed only once listed), then waits, at most the longest probe timeout and startMargin,
// for the first verdicts, so that the first answer served is already true. Scripts beyond the
// registry's exec concurrency wait for their turn, so with more scripts than that the wait is a
// timeout per round of them (scriptRounds).
func startPools(pools []*zonePool, reg *health.Registry) {
	var longest time.Duration
	for _, p := range pools {
		p.pool.Start()
		longest = max(longest, p.cfg.Spec.Timeout)
	}
	// A context, not a timer's channel: a timer delivers its tick to one waiter, and every pool
	// after the first to time out would wait without end.
	listed, cancel := context.WithTimeout(context.Background(), firstListWait)
	defer cancel()
	for _, p := range pools {
		if !p.pool.WaitListed(listed) {
			log.Warningf("zone %s: no list from the %s within %s; starting without it, answering as all_down says until it comes", p.cfg.Zone, p.cfg.Source, firstListWait)
		}
	}
	longest = max(longest, scriptRounds(pools, reg.ExecStats().Concurrency))
	checked, cancelChecked := context.WithTimeout(context.Background(), longest+startMargin)
	defer cancelChecked()
	for _, p := range pools {
		if !p.pool.WaitChecked(checked) {
			log.Warningf("zone %s: first probes still running after %s; serving what is known", p.cfg.Zone, longest+startMargin)
			return
		}
	}
}
