package healthdns

import (
	"fmt"
	"sync"
	"time"

	"github.com/coredns/caddy"

	"github.com/healthdns/healthdns/health"
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
	listener *statusListeners
	pools    []*Pool       // every block's, in setup order
	status   []*statusView // one per status address the instance's pools name, in setup order

	execConcurrency int    // exec_concurrency, 0 when no block gives it
	execAt          string // where it was given, "FILE:LINE"

	mu       sync.Mutex
	stopped  bool
	acquired []*statusView // the views start registered with their listeners
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
// address share its listener, and so must agree on its token.
func (l *lifecycle) addStatus(sc statusConfig, p *Pool) error {
	for _, v := range l.status {
		if v.addr != sc.addr {
			continue
		}
		if v.token != sc.token {
			return fmt.Errorf("%s:%d - Error during parsing: status %s: token differs from the one of %s:%d; pools that share a status listener share its token",
				sc.file, sc.line, sc.addr, v.file, v.line)
		}
		v.pools = append(v.pools, p)
		return nil
	}
	l.status = append(l.status, &statusView{statusConfig: sc, pools: []*Pool{p}, loops: l.reg.Loops})
	return nil
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

// start is the instance's OnStartup. Probe loops and status listeners start here, never in
// setup: a reload that fails in setup then has nothing to undo, and one that fails later undoes
// this through the registry's generation (docs/DESIGN.md, "Reload, precisely").
func (l *lifecycle) start() error {
	l.reg.Started(l.stop) // first, so that even a start cut short is undone
	concurrency := health.DefaultExecConcurrency
	if l.execConcurrency != 0 {
		concurrency = l.execConcurrency
	}
	// Before the pools start: their first scripts run under the new limit. A reload that drops
	// exec_concurrency goes back to the default.
	l.reg.SetExecConcurrency(concurrency)
	// Listeners before probes: an address in use fails the start before anything probes. A
	// listener the replaced instance holds is shared, not opened again.
	for _, v := range l.status {
		if err := l.listener.acquire(v); err != nil {
			return err
		}
		l.mu.Lock()
		l.acquired = append(l.acquired, v)
		l.mu.Unlock()
	}
	startPools(l.pools)
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
	for _, v := range l.acquired {
		l.listener.release(v)
	}
	l.acquired = nil
	for _, p := range l.pools {
		p.stop()
	}
}

// startPools acquires every pool's probe loops (adopting those a previous instance runs), so
// that all first probes run together, then waits, at most the longest probe timeout and
// startMargin, for their first verdicts, so that the first answer served is already true.
// Scripts beyond the registry's exec concurrency wait for their turn, so with more scripts than
// that the wait is a timeout per round of them.
func startPools(pools []*Pool) {
	var longest, execTimeout time.Duration
	scripts, execConcurrency := 0, 1
	for _, p := range pools {
		execConcurrency = p.reg.ExecStats().Concurrency
		p.start()
		longest = max(longest, p.cfg.spec.Timeout)
		for _, c := range p.cfg.checks {
			if c.Kind == health.Exec {
				scripts += len(p.cfg.backends)
				execTimeout = max(execTimeout, p.cfg.spec.Timeout)
			}
		}
	}
	if rounds := (scripts + execConcurrency - 1) / execConcurrency; rounds > 1 {
		longest = max(longest, time.Duration(rounds)*execTimeout)
	}
	deadline := time.NewTimer(longest + startMargin)
	defer deadline.Stop()
	for _, p := range pools {
		if !p.waitChecked(deadline.C) {
			log.Warningf("zone %s: first probes still running after %s; serving what is known", p.cfg.zone, longest+startMargin)
			return
		}
	}
}
