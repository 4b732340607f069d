package healthdns

import (
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/healthdns/healthdns/balance"
	"github.com/healthdns/healthdns/health"
)

// TestReloadChanges: a reload says, a line per pool, which pools, Corefile backends, checks and
// live lists it added or removed, and says so in one line when it changed none.
func TestReloadChanges(t *testing.T) {
	cfg := func(zone string, backends []string, checks ...health.Check) *poolConfig {
		c := testConfig(zone, backends...)
		c.server = "dns://:53"
		if checks != nil {
			c.checks = checks
		}
		return &c
	}
	tcp80 := health.Check{Kind: health.TCP, Port: 80}
	http := health.Check{Kind: health.HTTP, Port: 8080, Path: "/healthz"}
	etcd := cfg("live.lan.", nil)
	etcd.source = sourceConfig{kind: sourceEtcd, etcd: etcdConfig{endpoints: []string{"http://127.0.0.1:2379"}, prefix: "/healthdns/live.lan/"}}
	many := make([]string, 8)
	for i := range many {
		many[i] = "10.0.1." + string(rune('1'+i))
	}
	tests := []struct {
		name       string
		prev, next []*poolConfig
		want       []string
	}{{
		name: "backends and checks",
		prev: []*poolConfig{cfg("app.lan.", []string{"10.0.0.7", "10.0.0.8"}, tcp80)},
		next: []*poolConfig{cfg("app.lan.", []string{"10.0.0.8", "10.0.0.9"}, tcp80, http)},
		want: []string{"reload: zone app.lan. (dns://:53): backends added 10.0.0.9, removed 10.0.0.7; checks added " + http.String()},
	}, {
		name: "pools added and removed",
		prev: []*poolConfig{cfg("old.lan.", []string{"10.0.0.1"}), cfg("app.lan.", []string{"10.0.0.2"})},
		next: []*poolConfig{cfg("app.lan.", []string{"10.0.0.2"}), cfg("new.lan.", []string{"10.0.0.3", "10.0.0.4"}), etcd},
		want: []string{
			"reload: zone new.lan. (dns://:53) added: backends 10.0.0.3, 10.0.0.4; checks tcp :80",
			"reload: zone live.lan. (dns://:53) added: 0 backends and the etcd /healthdns/live.lan/ http://127.0.0.1:2379; checks tcp :80",
			"reload: zone old.lan. (dns://:53) removed",
		},
	}, {
		name: "many backends are counted, not all named",
		prev: []*poolConfig{cfg("app.lan.", nil)},
		next: []*poolConfig{cfg("app.lan.", many)},
		want: []string{"reload: zone app.lan. (dns://:53): backends added 8 (10.0.1.1, 10.0.1.2, 10.0.1.3, 10.0.1.4, 10.0.1.5, ...)"},
	}, {
		name: "nothing changed",
		prev: []*poolConfig{cfg("app.lan.", []string{"10.0.0.7"})},
		next: []*poolConfig{cfg("app.lan.", []string{"10.0.0.7"})},
		want: []string{"reload: no zone, backend line or check changed"},
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := reloadChanges(tc.prev, tc.next)
			if strings.Join(got, "\n") != strings.Join(tc.want, "\n") {
				t.Errorf("got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(tc.want, "\n"))
			}
		})
	}
}

// TestNopreemptHigherGroupLogged: under nopreempt, a primary that is healthy again while the
// standby keeps serving is logged once per recovery, with the ways to fail back, however many
// rebuilds follow.
func TestNopreemptHigherGroupLogged(t *testing.T) {
	lines := logLines(t)
	p, sw := groupPool(t, balance.Preemption{Never: true})
	const line = "zone ha.lan.: ipv4 priority group 200 healthy again; staying on 100 (nopreempt): fail back with a restart"
	count := func() int { return strings.Count(strings.Join(lines(), "\n"), line) }
	upCount := func(n int) func() bool { return func() bool { return p.snap.Load().v4.nUp == n } }
	waitServing(t, p, "10.0.0.1", "at start")
	for recovery := 1; recovery <= 2; recovery++ {
		sw.set("10.0.0.1", true)
		waitFor(t, "the primary down", upCount(1))
		waitServing(t, p, "10.0.0.2", "primary dead")
		sw.set("10.0.0.1", false)
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
	cfg.allDown = allDownServfail
	p := drainPool(t, cfg, drain{on: true, reason: "reimage"}, "10.0.0.2", "2001:db8::2")
	snap := p.snap.Load()
	if !snap.allDown || !snap.lastResort {
		t.Fatalf("all down %v, last resort %v; want both", snap.allDown, snap.lastResort)
	}
	if got := serving(p); !slices.Equal(got, []string{"10.0.0.1"}) || snap.v4.allDown || !snap.v4.drained {
		t.Errorf("ipv4: serving %v, all_down %v, drained %v; want the drained 10.0.0.1, all_down not deciding", got, snap.v4.allDown, snap.v4.drained)
	}
	if snap.v6.allDown || len(snap.v6.set.Addrs) != 0 || snap.v6.drained {
		t.Errorf("ipv6: all_down %v, serving %v; want NODATA, not all_down's SERVFAIL", snap.v6.allDown, snap.v6.set.Addrs)
	}
	for _, a := range []string{"10.0.0.1", "10.0.0.2", "2001:db8::2"} {
		if g := testutil.ToFloat64(backendInServiceUp.WithLabelValues("", "last.lan.", a)); g != 0 {
			t.Errorf("backend_in_service_up of %s = %v, want 0", a, g)
		}
	}
	fams := p.status(nil).Families
	if len(fams) != 2 || !fams[0].ServingDrained || fams[1].ServingDrained {
		t.Errorf("status families %+v, want serving_drained for ipv4 alone", fams)
	}
}
