package healthdns

import (
	"fmt"
	"strings"
	"sync"

	"github.com/coredns/caddy"

	"github.com/healthdns/healthdns/pool"
)

// CheckedPool is one zone's pool as a check of a Corefile parsed it.
type CheckedPool struct {
	File   string // the Corefile, as caddy names it
	Config pool.Config
	status string // the status listener it shows on, "" for none
}

// checking collects the pools that setup parses while Check runs, since caddy keeps the
// instance it validates to itself; nil otherwise. checkMu makes one Check run at a time.
var (
	checkMu  sync.Mutex
	checking *[]CheckedPool
)

// Check parses the Corefile cdyfile as a start would, every plugin's setup of every server
// block included, and returns the healthdns pools it makes, or the first error (with its file
// and line, as a start reports it). Nothing starts: no listener is bound, no probe is sent, no
// source is followed; a backends file and a token file are read, as a start reads them.
func Check(cdyfile caddy.Input) ([]CheckedPool, error) {
	checkMu.Lock()
	defer checkMu.Unlock()
	var pools []CheckedPool
	checking = &pools
	defer func() { checking = nil }()
	// justValidate: each directive's setup runs, and caddy's parsing callbacks, which make the
	// servers, do not.
	if err := caddy.ValidateAndExecuteDirectives(cdyfile, nil, true); err != nil {
		return nil, err
	}
	return pools, nil
}

// checked records the pools a setup parsed, while Check runs. Callers are caddy's setups,
// which run one at a time.
func checked(c *caddy.Controller, cfg poolConfig) {
	if checking != nil {
		*checking = append(*checking, CheckedPool{File: c.File(), Config: cfg.Config, status: cfg.status.Addr})
	}
}

// String is what `healthdns-check` prints of the pool: what it answers from, how it probes,
// and where its backends come from.
func (p CheckedPool) String() string {
	var b strings.Builder
	c := p.Config
	fmt.Fprintf(&b, "%s: zone %s of server %s\n", p.File, c.Zone, c.Server)
	fmt.Fprintf(&b, "  policy %s, all_down %s, %s\n", c.Policy, c.AllDown, preemption(c))
	fmt.Fprintf(&b, "  interval %s, fast_interval %s, timeout %s, rise %d, fall %d\n", c.Spec.Interval, c.Spec.Fast, c.Spec.Timeout, c.Spec.Rise, c.Spec.Fall)
	checks := make([]string, len(c.Checks))
	for i, ch := range c.Checks {
		checks[i] = ch.String()
	}
	fmt.Fprintf(&b, "  checks: %s\n", strings.Join(checks, "; "))
	if c.Source.Kind != pool.SourceNone {
		fmt.Fprintf(&b, "  backends from %s\n", c.Source)
	}
	if p.status != "" {
		fmt.Fprintf(&b, "  status on %s\n", p.status)
	}
	for _, be := range c.Backends {
		fmt.Fprintf(&b, "  backend %s weight %d priority %d", be.Addr, be.Weight, be.Priority)
		if be.Drain.On {
			b.WriteString(" drained")
		}
		b.WriteString("\n")
	}
	for _, be := range c.Source.Initial {
		fmt.Fprintf(&b, "  backend %s weight %d priority %d (from %s)", be.Addr, be.Weight, be.Priority, c.Source)
		if be.Drain.On {
			b.WriteString(" drained")
		}
		b.WriteString("\n")
	}
	return b.String()
}

func preemption(c pool.Config) string {
	switch {
	case c.Preempt.Never:
		return "nopreempt"
	case c.Preempt.Delay > 0:
		return "preempt_delay " + c.Preempt.Delay.String()
	}
	return "preempt"
}
