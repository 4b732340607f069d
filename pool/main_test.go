package pool

import (
	"context"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/healthdns/healthdns/balance"
	"github.com/healthdns/healthdns/health"
)

// seriesKeeper is a health observer that keeps the pool's per-backend series as the plugin's
// does, and records nothing else: the pool's own series and lines are what these tests read.
type seriesKeeper struct{ m *Metrics }

func (seriesKeeper) ProbeRecorder(health.Target) func(health.Result) { return func(health.Result) {} }

func (seriesKeeper) Changed(health.Target, health.Change) {}

func (seriesKeeper) Stopped(netip.Addr, health.Check) {}

func (o seriesKeeper) Released(owner string, addr netip.Addr) {
	server, zone, _ := strings.Cut(owner, " ")
	o.m.DeleteBackend(server, zone, addr)
}

// testConfig is a pool of backends with a TCP check probed once an hour: the tests' probes
// decide the verdicts.
func testConfig(zone string, backends ...string) Config {
	cfg := Config{
		Zone:   zone,
		Spec:   health.Spec{Interval: time.Hour, Timeout: time.Second, Rise: 2, Fall: 2},
		Checks: []health.Check{{Kind: health.TCP, Port: 80}},
		Policy: "round_robin",
	}
	for _, b := range backends {
		cfg.Backends = append(cfg.Backends, Backend{Addr: netip.MustParseAddr(b), Weight: 1, Priority: balance.DefaultPriority})
	}
	return cfg
}

// newTestPool makes the pool of cfg, probed by probe, with series of its own.
func newTestPool(cfg Config, probe func(context.Context, netip.Addr) error) *Pool {
	m := NewMetrics()
	return New(cfg, health.NewRegistry(seriesKeeper{m}, health.WithProbe(probe)), m)
}

// startPool starts p as the plugin does: its list, then its first verdicts, before it answers.
func startPool(t *testing.T, p *Pool) {
	t.Helper()
	p.Start()
	t.Cleanup(p.Stop) // a second Stop does nothing
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if !p.WaitListed(ctx) || !p.WaitChecked(ctx) {
		t.Fatal("the pool's first list or verdicts did not come within 10s")
	}
}
