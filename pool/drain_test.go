package pool

import (
	"slices"
	"testing"
	"time"

	"github.com/healthdns/healthdns/test/testkit"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// drainPool runs a pool of backends probed once (interval 1h) through sw, whose first
// backend is drained with d.
func drainPool(t *testing.T, cfg Config, d Drain, dead ...string) *Pool {
	t.Helper()
	sw := testkit.NewSwitchboard()
	for _, a := range dead {
		sw.Set(a, true)
	}
	cfg.Spec.Interval, cfg.Spec.Timeout, cfg.Spec.Rise, cfg.Spec.Fall = time.Hour, 100*time.Millisecond, 1, 1
	cfg.Backends[0].Drain = d
	p := newTestPool(cfg, sw.Probe)
	startPool(t, p)

	return p
}

func TestPoolDrain(t *testing.T) {
	drained := Drain{On: true, Reason: "maintenance"}
	t.Run("a healthy drained backend is not served", func(t *testing.T) {
		p := drainPool(t, testConfig("drain.lan.", "10.0.0.1", "10.0.0.2"), drained)
		if got := serving(p); !slices.Equal(got, []string{"10.0.0.2"}) {
			t.Errorf("serving %v, want only 10.0.0.2", got)
		}
		if g := testutil.ToFloat64(p.metrics.BackendDrained.WithLabelValues("", "drain.lan.", "10.0.0.1")); g != 1 {
			t.Errorf("backend_drained of 10.0.0.1 = %v, want 1", g)
		}
		st := p.Status().Backends[0]
		if st.DrainedBy != "config" || st.Drained.Reason != "maintenance" || !st.Drained.Until.IsZero() {
			t.Errorf("status of 10.0.0.1: drained by %q, reason %q, until %v; want config, maintenance, none", st.DrainedBy, st.Drained.Reason, st.Drained.Until)
		}
	})
	t.Run("a drained backend does not keep the pool from all down", func(t *testing.T) {
		cfg := testConfig("drain.lan.", "10.0.0.1", "10.0.0.2")
		cfg.AllDown = AllDownServfail
		p := drainPool(t, cfg, drained, "10.0.0.2")
		if !p.Snapshot().AllDown {
			t.Error("the only backend in service is down, and the pool is not all down")
		}
	})
	t.Run("all drained is not all down", func(t *testing.T) {
		cfg := testConfig("drain.lan.", "10.0.0.1")
		cfg.AllDown = AllDownServfail
		p := drainPool(t, cfg, drained, "10.0.0.1")
		snap := p.Snapshot()
		if snap.AllDown || len(serving(p)) != 0 {
			t.Errorf("a pool of one drained backend: all down %v, serving %v; want NODATA", snap.AllDown, serving(p))
		}
	})
	t.Run("serve_all does not serve drained backends", func(t *testing.T) {
		p := drainPool(t, testConfig("drain.lan.", "10.0.0.1", "10.0.0.2"), drained, "10.0.0.1", "10.0.0.2")
		if got := serving(p); !p.Snapshot().AllDown || !slices.Equal(got, []string{"10.0.0.2"}) {
			t.Errorf("all down under serve_all: serving %v, want only 10.0.0.2", got)
		}
	})
	t.Run("a priority group of drained backends is not healthy", func(t *testing.T) {
		cfg := testConfig("drain.lan.", "10.0.0.1", "10.0.0.2")
		cfg.Backends[0].Priority = 200
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
		p := drainPool(t, testConfig("drain.lan.", "10.0.0.1", "10.0.0.2"), Drain{On: true, Until: time.Now().Add(300 * time.Millisecond)})
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
		if g := testutil.ToFloat64(p.metrics.BackendDrained.WithLabelValues("", "drain.lan.", "10.0.0.1")); g != 0 {
			t.Errorf("backend_drained after the end = %v, want 0", g)
		}
	})
	t.Run("a drain that ended before startup does not hold", func(t *testing.T) {
		p := drainPool(t, testConfig("drain.lan.", "10.0.0.1", "10.0.0.2"), Drain{On: true, Until: time.Now().Add(-time.Hour)})
		if got := serving(p); len(got) != 2 {
			t.Errorf("serving %v, want both", got)
		}
	})
}
