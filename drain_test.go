package healthdns

import (
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/healthdns/healthdns/balance"
	"github.com/healthdns/healthdns/health"
)

// drainPool runs a pool of backends probed once (interval 1h) through sw, whose first
// backend is drained with d.
func drainPool(t *testing.T, cfg poolConfig, d drain, dead ...string) *Pool {
	t.Helper()
	sw := &switchboard{dead: map[netip.Addr]bool{}}
	for _, a := range dead {
		sw.set(a, true)
	}
	cfg.spec.Interval, cfg.spec.Timeout, cfg.spec.Rise, cfg.spec.Fall = time.Hour, 100*time.Millisecond, 1, 1
	cfg.backends[0].drain = d
	p := newPool(cfg, balance.Random{}, health.NewRegistry(observer{}, health.WithProbe(sw.probe)))
	startPools([]*Pool{p})
	t.Cleanup(p.stop)
	return p
}

func TestPoolDrain(t *testing.T) {
	drained := drain{on: true, reason: "maintenance"}
	t.Run("a healthy drained backend is not served", func(t *testing.T) {
		p := drainPool(t, testConfig("drain.lan.", "10.0.0.1", "10.0.0.2"), drained)
		if got := serving(p); !slices.Equal(got, []string{"10.0.0.2"}) {
			t.Errorf("serving %v, want only 10.0.0.2", got)
		}
		if g := testutil.ToFloat64(backendDrained.WithLabelValues("", "drain.lan.", "10.0.0.1")); g != 1 {
			t.Errorf("backend_drained of 10.0.0.1 = %v, want 1", g)
		}
		st := p.status(nil).Backends[0]
		if st.State != "drained" || st.DrainReason != "maintenance" || st.DrainUntil != nil {
			t.Errorf("status of 10.0.0.1: state %q, drain_reason %q, drain_until %v; want drained, maintenance, none", st.State, st.DrainReason, st.DrainUntil)
		}
	})
	t.Run("a drained backend does not keep the pool from all down", func(t *testing.T) {
		cfg := testConfig("drain.lan.", "10.0.0.1", "10.0.0.2")
		cfg.allDown = allDownServfail
		p := drainPool(t, cfg, drained, "10.0.0.2")
		if !p.snap.Load().allDown {
			t.Error("the only backend in service is down, and the pool is not all down")
		}
	})
	t.Run("all drained is not all down", func(t *testing.T) {
		cfg := testConfig("drain.lan.", "10.0.0.1")
		cfg.allDown = allDownServfail
		p := drainPool(t, cfg, drained, "10.0.0.1")
		snap := p.snap.Load()
		if snap.allDown || len(serving(p)) != 0 {
			t.Errorf("a pool of one drained backend: all down %v, serving %v; want NODATA", snap.allDown, serving(p))
		}
	})
	t.Run("serve_all does not serve drained backends", func(t *testing.T) {
		p := drainPool(t, testConfig("drain.lan.", "10.0.0.1", "10.0.0.2"), drained, "10.0.0.1", "10.0.0.2")
		if got := serving(p); !p.snap.Load().allDown || !slices.Equal(got, []string{"10.0.0.2"}) {
			t.Errorf("all down under serve_all: serving %v, want only 10.0.0.2", got)
		}
	})
	t.Run("a priority group of drained backends is not healthy", func(t *testing.T) {
		cfg := testConfig("drain.lan.", "10.0.0.1", "10.0.0.2")
		cfg.backends[0].priority = 200
		p := drainPool(t, cfg, drained)
		if got := serving(p); !slices.Equal(got, []string{"10.0.0.2"}) {
			t.Errorf("primary drained: serving %v, want the standby 10.0.0.2", got)
		}
		if g, _ := p.failover[0].Serving(); g != 100 {
			t.Errorf("serving group %d, want 100", g)
		}
	})
	t.Run("the drain's end returns the backend without a probe result", func(t *testing.T) {
		// Probed once an hour: only the pool's timer can bring the backend back.
		p := drainPool(t, testConfig("drain.lan.", "10.0.0.1", "10.0.0.2"), drain{on: true, until: time.Now().Add(300 * time.Millisecond)})
		if got := serving(p); !slices.Equal(got, []string{"10.0.0.2"}) {
			t.Fatalf("before the drain's end: serving %v, want only 10.0.0.2", got)
		}
		deadline := time.Now().Add(5 * time.Second)
		for len(serving(p)) != 2 {
			if time.Now().After(deadline) {
				t.Fatalf("5s after the drain's end: serving %v, want both", serving(p))
			}
			time.Sleep(10 * time.Millisecond)
		}
		if g := testutil.ToFloat64(backendDrained.WithLabelValues("", "drain.lan.", "10.0.0.1")); g != 0 {
			t.Errorf("backend_drained after the end = %v, want 0", g)
		}
	})
	t.Run("a drain that ended before startup does not hold", func(t *testing.T) {
		p := drainPool(t, testConfig("drain.lan.", "10.0.0.1", "10.0.0.2"), drain{on: true, until: time.Now().Add(-time.Hour)})
		if got := serving(p); len(got) != 2 {
			t.Errorf("serving %v, want both", got)
		}
	})
}
