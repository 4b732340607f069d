package status

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/healthdns/healthdns/balance"
	"github.com/healthdns/healthdns/health"
	"github.com/healthdns/healthdns/pool"
	"github.com/healthdns/healthdns/test/testkit"
	"go.uber.org/goleak"
)

// seriesKeeper is the health observer of the tests' registries: it drops a released backend's
// series, as the plugin's does, and records nothing else.
type seriesKeeper struct{ m *pool.Metrics }

func (seriesKeeper) ProbeRecorder(health.Target) func(health.Result) { return func(health.Result) {} }

func (seriesKeeper) Changed(health.Target, health.Change) {}

func (seriesKeeper) Stopped(netip.Addr, health.Check) {}

func (o seriesKeeper) Released(owner string, addr netip.Addr) {
	server, zone, _ := strings.Cut(owner, " ")
	o.m.DeleteBackend(server, zone, addr)
}

// testConfig is a pool of backends with a TCP check probed once an hour: the tests' probes
// decide the verdicts.
func testConfig(zone string, backends ...string) pool.Config {
	cfg := pool.Config{
		Server: "dns://127.0.0.1:1053",
		Zone:   zone,
		Spec:   health.Spec{Interval: time.Hour, Timeout: time.Second, Rise: 2, Fall: 2},
		Checks: []health.Check{{Kind: health.TCP, Port: 80}},
		Policy: "round_robin",
	}
	for _, b := range backends {
		cfg.Backends = append(cfg.Backends, pool.Backend{Addr: netip.MustParseAddr(b), Weight: 1, Priority: balance.DefaultPriority})
	}
	return cfg
}

// running is what a test's pools run on: a registry and series of their own.
type running struct {
	reg     *health.Registry
	metrics *pool.Metrics
}

// runningOf keeps each test pool's registry, for the pool a reload makes in its place.
var runningOf sync.Map // *pool.Pool → running

func newRunning(probe func(context.Context, netip.Addr) error) running {
	m := pool.NewMetrics()
	return running{health.NewRegistry(seriesKeeper{m}, health.WithProbe(probe)), m}
}

// start starts a pool of cfg on r as the plugin does, its first verdicts in before it answers.
func (r running) start(t *testing.T, cfg pool.Config) *pool.Pool {
	t.Helper()
	p := pool.New(cfg, r.reg, r.metrics)
	runningOf.Store(p, r)
	p.Start()
	t.Cleanup(p.Stop)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if !p.WaitListed(ctx) || !p.WaitChecked(ctx) {
		t.Fatal("no first verdicts in 10s")
	}
	return p
}

// statusPools starts pools on a registry whose probes pass, except for the addresses in down.
func statusPools(t *testing.T, down map[string]bool, cfgs ...pool.Config) []*pool.Pool {
	t.Helper()
	r := newRunning(func(_ context.Context, a netip.Addr) error {
		if down[a.String()] {
			return fmt.Errorf("tcp :80: %w", syscall.ECONNREFUSED)
		}
		return nil
	})
	var pools []*pool.Pool
	for _, cfg := range cfgs {
		pools = append(pools, r.start(t, cfg))
	}
	return pools
}

// reloadPool starts the pool a reload would make of cfg on p's registry, then stops p, as caddy
// does.
func reloadPool(t *testing.T, p *pool.Pool, cfg pool.Config) *pool.Pool {
	t.Helper()
	r, _ := runningOf.Load(p)
	next := r.(running).start(t, cfg)
	p.Stop()
	return next
}

func cfgOf(p *pool.Pool) pool.Config { return p.Status().Config }

// shown shows pools as the plugin does, each answering 8 records of TTL 5.
func shown(pools ...*pool.Pool) []Shown {
	out := make([]Shown, len(pools))
	for i, p := range pools {
		out[i] = Shown{Pool: p, Answers: 8, TTL: 5, Serial: uint32(i + 1)}
	}
	return out
}

// serving returns the addresses the pool answers A with now.
func serving(p *pool.Pool) []string {
	var out []string
	for _, a := range p.Snapshot().V4.Set.Addrs {
		out = append(out, a.String())
	}
	return out
}

func waitServing(t *testing.T, p *pool.Pool, want string, what string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		got := serving(p)
		if len(got) == 1 && got[0] == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: serving %v, want only %s", what, got, want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// groupPool runs a pool of a primary (priority 200) and a standby (100) probed every 20ms.
func groupPool(t *testing.T, pre balance.Preemption) (*pool.Pool, *testkit.Switchboard) {
	t.Helper()
	sw := testkit.NewSwitchboard()
	cfg := testConfig("ha.lan.", "10.0.0.1", "10.0.0.2")
	cfg.Backends[0].Priority = 200
	cfg.Spec.Interval, cfg.Spec.Timeout, cfg.Spec.Rise, cfg.Spec.Fall = 20*time.Millisecond, 10*time.Millisecond, 2, 2
	cfg.Preempt = pre
	return newRunning(sw.Probe).start(t, cfg), sw
}

// metricsOf is the series of a test's pool.
func metricsOf(p *pool.Pool) *pool.Metrics {
	r, _ := runningOf.Load(p)
	return r.(running).metrics
}

// drainedByAPI lists the backends an operator's drain holds for.
func drainedByAPI(p *pool.Pool) []string {
	var out []string
	for _, b := range p.Status().Backends {
		if b.DrainedBy == "api" {
			out = append(out, b.Addr.String())
		}
	}
	return out
}

// docOf is the pool's part of /status.json now.
func docOf(p *pool.Pool) PoolDoc { return poolDoc(Shown{Pool: p}, p.Status()) }

// Every goroutine the status surface starts (a listener's server) and every pool's end once
// their tests released and stopped them.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
