package pool

import (
	"context"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/healthdns/healthdns/test/testkit"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// gate is a switchboard whose probes of held addresses wait until the test lets them go, so a
// test can look at a pool while a new backend's first probe is still out.
type gate struct {
	*testkit.Switchboard
	mu   sync.Mutex
	held map[netip.Addr]chan struct{}
}

func newGate() *gate {
	return &gate{Switchboard: testkit.NewSwitchboard(), held: map[netip.Addr]chan struct{}{}}
}

func (g *gate) hold(addr string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.held[netip.MustParseAddr(addr)] = make(chan struct{})
}

func (g *gate) letGo(addr string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	close(g.held[netip.MustParseAddr(addr)])
}

func (g *gate) probe(ctx context.Context, a netip.Addr) error {
	g.mu.Lock()
	ch := g.held[a]
	g.mu.Unlock()
	if ch != nil {
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return g.Switchboard.Probe(ctx, a)
}

func listPool(t *testing.T, g *gate, src Source, static ...string) *Pool {
	t.Helper()
	cfg := testConfig("live.lan.", static...)
	cfg.Server = "dns://:53"
	cfg.Source = src
	cfg.Spec.Interval, cfg.Spec.Timeout, cfg.Spec.Rise, cfg.Spec.Fall = 20*time.Millisecond, 10*time.Millisecond, 2, 2
	p := newTestPool(cfg, g.probe)

	return p
}

func backends(t *testing.T, lines ...string) []Backend {
	t.Helper()
	var out []Backend
	for _, l := range lines {
		b, err := ParseBackendWords(strings.Fields(l))
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, b)
	}
	return out
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func memberOf(p *Pool, addr string) *member {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, m := range p.members {
		if m.Addr.String() == addr {
			return m
		}
	}
	return nil
}

// TestSourceListChanges: a staying backend keeps its member (its health state and loops), a new
// one is not answered before its first verdict, a removed one is not answered and its series go.
func TestSourceListChanges(t *testing.T) {
	g := newGate()
	p := listPool(t, g, Source{Kind: SourceFile, Path: "/test/list"}, "10.1.0.1")
	p.setSourceList(backends(t, "10.1.0.2", "10.1.0.3"))
	startPool(t, p)
	waitFor(t, "three up", func() bool { return len(serving(p)) == 3 })
	if !p.Ready() {
		t.Fatal("not ready after every backend's first verdict")
	}
	stay := memberOf(p, "10.1.0.2")

	// The staying backend is down: a change of its weight must not reset that, and it must owe
	// its rise probes when it comes back.
	g.Set("10.1.0.2", true)
	waitFor(t, "10.1.0.2 down", func() bool { return !slices.Contains(serving(p), "10.1.0.2") })

	g.hold("10.1.0.4")
	p.setSourceList(backends(t, "10.1.0.2 weight 5", "10.1.0.4"))
	if memberOf(p, "10.1.0.2") != stay {
		t.Fatal("a staying backend got a new member: its health state was lost")
	}
	if got := memberOf(p, "10.1.0.2").Weight; got != 5 {
		t.Errorf("weight %d after the change, want 5", got)
	}
	if slices.Contains(serving(p), "10.1.0.3") {
		t.Error("removed 10.1.0.3 still answered")
	}
	if n := testutil.CollectAndCount(p.metrics.BackendUp); n != 3 {
		t.Errorf("%d backend_up series, want 3 (10.1.0.3's gone)", n)
	}
	if slices.Contains(serving(p), "10.1.0.4") {
		t.Error("new 10.1.0.4 answered before its first probe came back")
	}
	if slices.Contains(serving(p), "10.1.0.2") {
		t.Error("the down backend came back up with its weight change")
	}
	g.letGo("10.1.0.4")
	waitFor(t, "10.1.0.4 answered", func() bool { return slices.Contains(serving(p), "10.1.0.4") })
	g.Set("10.1.0.2", false)
	waitFor(t, "10.1.0.2 back", func() bool { return slices.Contains(serving(p), "10.1.0.2") })
	if got := stay.leases[0].Status().Transitions; got < 2 {
		t.Errorf("10.1.0.2 shows %d transitions, want its down and up kept on one monitor", got)
	}
}

// TestSourceAwaited: a pool whose source has not delivered is not ready and answers as all
// down, both families; its first list makes it ready once probed.
func TestSourceAwaited(t *testing.T) {
	g := newGate()
	p := listPool(t, g, Source{Kind: SourceEtcd, Etcd: EtcdSource{Prefix: "/healthdns/live.lan/"}})
	startPool(t, p)
	snap := p.Snapshot()
	if !snap.V4.AllDown || !snap.V6.AllDown || p.Ready() {
		t.Fatalf("before any list: v4 all down %v, v6 all down %v, ready %v; want all down and not ready", snap.V4.AllDown, snap.V6.AllDown, p.Ready())
	}
	p.setSourceList(backends(t, "10.1.0.5", "10.1.0.6 priority 200"))
	waitFor(t, "ready", p.Ready)
	waitFor(t, "the priority 200 backend serving", func() bool { return slices.Equal(serving(p), []string{"10.1.0.6"}) })
	// A list that changes the priorities moves the serving group.
	p.setSourceList(backends(t, "10.1.0.5 priority 250", "10.1.0.6 priority 200"))
	waitFor(t, "10.1.0.5 serving", func() bool { return slices.Equal(serving(p), []string{"10.1.0.5"}) })
	// An empty list is a pool with nothing to answer: all down, as all_down says.
	p.setSourceList(nil)
	waitFor(t, "all down once the list is empty", func() bool { s := p.Snapshot(); return s.V4.AllDown && s.V6.AllDown })
}

// TestAwaitedPoolNotDownBeforeProbed: a pool that waits for its etcd list while the first probe
// of its Corefile backend is still out knows nothing of that backend: the log says what it waits
// for, never that the backend is down (TestChaos found every etcd zone with a backend line
// logging "every backend is down (1 configured)" at startup, just before "up (first probe)").
// Once the probe comes back down, the pool is down, and says so.
func TestAwaitedPoolNotDownBeforeProbed(t *testing.T) {
	lines := testkit.LogLines(t)
	g := newGate()
	g.hold("10.1.0.7")
	g.Set("10.1.0.7", true) // its first probe, once let go, fails
	p := listPool(t, g, Source{Kind: SourceEtcd, Etcd: EtcdSource{Prefix: "/healthdns/live.lan/"}}, "10.1.0.7")
	p.Start()
	t.Cleanup(p.Stop)
	logged := func(text string) func() bool {
		return func() bool { return strings.Contains(strings.Join(lines(), "\n"), text) }
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("log:\n%s", strings.Join(lines(), "\n"))
		}
	})
	waitFor(t, "the wait logged", logged("zone live.lan.: no backend up yet: waiting for the first list from the etcd /healthdns/live.lan/"))
	if !logged("and the first probe of 1 configured backend: serving the 1 configured address anyway (all_down serve_all)")() {
		t.Errorf("the wait's line does not say what it waits for, or what is answered:\n%s", strings.Join(lines(), "\n"))
	}
	if logged("every backend is down")() {
		t.Fatalf("a backend not yet probed said down:\n%s", strings.Join(lines(), "\n"))
	}
	g.letGo("10.1.0.7")
	waitFor(t, "the pool down once probed", logged("zone live.lan.: every backend is down (1 configured): serving the 1 configured address anyway (all_down serve_all)"))
}
