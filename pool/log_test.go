package pool

import (
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/healthdns/healthdns/balance"
	"github.com/healthdns/healthdns/test/testkit"
)

// TestNopreemptHigherGroupLogged: under nopreempt, a primary that is healthy again while the
// standby keeps serving is logged once per recovery, with the ways to fail back, however many
// rebuilds follow.
func TestNopreemptHigherGroupLogged(t *testing.T) {
	lines := testkit.LogLines(t)
	p, sw := groupPool(t, balance.Preemption{Never: true})
	const line = "zone ha.lan.: ipv4 priority group 200 healthy again; staying on 100 (nopreempt): fail back with a restart"
	count := func() int { return strings.Count(strings.Join(lines(), "\n"), line) }
	upCount := func(n int) func() bool { return func() bool { return p.Snapshot().V4.NUp == n } }
	waitServing(t, p, "10.0.0.1", "at start")
	for recovery := 1; recovery <= 2; recovery++ {
		sw.Set("10.0.0.1", true)
		waitFor(t, "the primary down", upCount(1))
		waitServing(t, p, "10.0.0.2", "primary dead")
		sw.Set("10.0.0.1", false)
		waitFor(t, "the primary healthy again", upCount(2))
		for range 5 {
			p.rebuild()
		}
		if n := count(); n != recovery {
			t.Fatalf("after recovery %d the line was logged %d times, want %d:\n%s", recovery, n, recovery, strings.Join(lines(), "\n"))
		}
		if got := serving(p); len(got) != 1 || got[0] != "10.0.0.2" {
			t.Fatalf("nopreempt: serving %v after the primary returned, want the standby still", got)
		}
		if recovery == 1 { // fail back and lose the primary again, for a second recovery
			if _, err := p.FailBack("test"); err != nil {
				t.Fatal(err)
			}
			waitServing(t, p, "10.0.0.1", "after the fail-back")
		}
	}
}

// TestPoolDrainedLastResort: nothing in service up, a drained backend healthy: that family
// answers the drained backend whatever all_down says, the other family gets NODATA (not
// SERVFAIL), and the in-service gauge says nothing in service is up.
func TestPoolDrainedLastResort(t *testing.T) {
	cfg := testConfig("last.lan.", "10.0.0.1", "10.0.0.2", "2001:db8::2")
	cfg.AllDown = AllDownServfail
	p := drainPool(t, cfg, Drain{On: true, Reason: "reimage"}, "10.0.0.2", "2001:db8::2")
	snap := p.Snapshot()
	if !snap.AllDown || !snap.LastResort {
		t.Fatalf("all down %v, last resort %v; want both", snap.AllDown, snap.LastResort)
	}
	if got := serving(p); !slices.Equal(got, []string{"10.0.0.1"}) || snap.V4.AllDown || !snap.V4.Drained {
		t.Errorf("ipv4: serving %v, all_down %v, drained %v; want the drained 10.0.0.1, all_down not deciding", got, snap.V4.AllDown, snap.V4.Drained)
	}
	if snap.V6.AllDown || len(snap.V6.Set.Addrs) != 0 || snap.V6.Drained {
		t.Errorf("ipv6: all_down %v, serving %v; want NODATA, not all_down's SERVFAIL", snap.V6.AllDown, snap.V6.Set.Addrs)
	}
	for _, a := range []string{"10.0.0.1", "10.0.0.2", "2001:db8::2"} {
		if g := testutil.ToFloat64(p.metrics.BackendInServiceUp.WithLabelValues("", "last.lan.", a)); g != 0 {
			t.Errorf("backend_in_service_up of %s = %v, want 0", a, g)
		}
	}
	fams := p.Status().Families
	if len(fams) != 2 || !fams[0].ServingDrained || fams[1].ServingDrained {
		t.Errorf("status families %+v, want serving_drained for ipv4 alone", fams)
	}
}
