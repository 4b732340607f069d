package healthdns

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/coredns/coredns/core/dnsserver"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	dto "github.com/prometheus/client_model/go"

	"github.com/healthdns/healthdns/event"
	"github.com/healthdns/healthdns/health"
	"github.com/healthdns/healthdns/pool"
	"github.com/healthdns/healthdns/test/testkit"
)

// TestMetricNames lints our collectors as CoreDNS's own test/metric_naming_test.go does.
func TestMetricNames(t *testing.T) {
	target := health.Target{Addr: netip.MustParseAddr("192.0.2.1"), Spec: health.Spec{Check: health.Check{Kind: health.TCP, Port: 80}}}
	record := observer{}.ProbeRecorder(target)
	record(health.Result{Took: time.Millisecond})
	record(health.Result{Took: time.Millisecond, Err: fmt.Errorf("tcp :80: %w", syscall.ECONNREFUSED)})
	observer{}.Changed(target, health.Change{Up: true})
	poolMetrics.BackendUp.WithLabelValues("dns://:53", "lint.lan.", "192.0.2.1").Set(1)
	poolMetrics.AllDownTotal.WithLabelValues("dns://:53", "lint.lan.", "ipv4").Inc()
	poolMetrics.AnswersTotal.WithLabelValues("dns://:53", "lint.lan.", "192.0.2.1").Inc()
	proc.events().Publish(event.Event{Kind: event.AllDown, Server: "dns://:53", Zone: "lint.lan."})

	families, err := prometheus.DefaultGatherer.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var ours []*dto.MetricFamily
	for _, mf := range families {
		if strings.HasPrefix(mf.GetName(), "coredns_healthdns_") {
			ours = append(ours, mf)
		}
	}
	if len(ours) != 14 { // and the two of exec waits and the three of notify, always there
		t.Errorf("%d healthdns metric families, want 14", len(ours))
	}
	problems, err := promlint.NewWithMetricFamilies(ours).Lint()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("%s: %s", p.Metric, p.Text)
	}

	// A backend dropped by a reload loses its series.
	observer{}.Released(pool.Owner("dns://:53", "lint.lan."), target.Addr)
	observer{}.Stopped(target.Addr, target.Spec.Check)
	if n := testutil.CollectAndCount(poolMetrics.BackendUp, "coredns_healthdns_backend_up"); n != 0 {
		t.Errorf("%d backend_up series after release", n)
	}
	if n := testutil.CollectAndCount(probesTotal, "coredns_healthdns_probes_total"); n != 0 {
		t.Errorf("%d probes_total series after stop", n)
	}
	if n := testutil.CollectAndCount(probeFailuresTotal, "coredns_healthdns_probe_failures_total"); n != 0 {
		t.Errorf("%d probe_failures_total series after stop", n)
	}
	poolMetrics.AllDownTotal.Reset()
}

// TestCheckLabel checks that every series of a check names it alike, so that the histograms join
// probes_total and transitions_total.
func TestCheckLabel(t *testing.T) {
	target := health.Target{Addr: netip.MustParseAddr("192.0.2.9"), Spec: health.Spec{Check: health.Check{Kind: health.TCP, Port: 8089}}}
	observer{}.ProbeRecorder(target)(health.Result{Took: time.Millisecond})
	observer{}.Changed(target, health.Change{Up: false, Err: errors.New("refused"), Streak: 2, Need: 2})
	t.Cleanup(func() {
		observer{}.Stopped(target.Addr, target.Spec.Check)
		probeDuration.DeleteLabelValues("tcp :8089")
		probeLateness.DeleteLabelValues("tcp :8089")
	})
	want := "tcp :8089"
	for name, c := range map[string]prometheus.Collector{
		"probe_duration_seconds": probeDuration,
		"probe_lateness_seconds": probeLateness,
		"probes_total":           probesTotal,
		"transitions_total":      transitionsTotal,
	} {
		if !hasLabel(t, c, "check", want) {
			t.Errorf("%s has no series with check=%q", name, want)
		}
	}
}

func hasLabel(t *testing.T, c prometheus.Collector, name, value string) bool {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	if err := reg.Register(c); err != nil {
		t.Fatal(err)
	}
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range families {
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if lp.GetName() == name && lp.GetValue() == value {
					return true
				}
			}
		}
	}
	return false
}

// TestReleasedDeletesOnePool checks that a pool's release deletes its own series and not those of
// the same zone in another server block.
func TestReleasedDeletesOnePool(t *testing.T) {
	const zone, backend = "both.lan.", "192.0.2.7"
	for _, server := range []string{"dns://:1053", "dns://:1054"} {
		poolMetrics.BackendUp.WithLabelValues(server, zone, backend).Set(1)
		poolMetrics.AnswersTotal.WithLabelValues(server, zone, backend).Inc()
	}
	t.Cleanup(func() {
		poolMetrics.BackendUp.DeletePartialMatch(prometheus.Labels{"zone": zone})
		poolMetrics.AnswersTotal.DeletePartialMatch(prometheus.Labels{"zone": zone})
	})
	observer{}.Released(pool.Owner("dns://:1053", zone), netip.MustParseAddr(backend))
	for name, vec := range map[string]*prometheus.MetricVec{"backend_up": poolMetrics.BackendUp.MetricVec, "answers_total": poolMetrics.AnswersTotal.MetricVec} {
		if _, err := vec.GetMetricWithLabelValues("dns://:1054", zone, backend); err != nil {
			t.Fatal(err)
		}
		if !vec.Delete(prometheus.Labels{"server": "dns://:1054", "zone": zone, "backend": backend}) {
			t.Errorf("%s: the other server block's series was deleted", name)
		}
		if vec.Delete(prometheus.Labels{"server": "dns://:1053", "zone": zone, "backend": backend}) {
			t.Errorf("%s: the released pool's series is still there", name)
		}
	}
}

func TestServerLabel(t *testing.T) {
	for _, tc := range []struct {
		transport, port string
		hosts           []string
		want            string
	}{
		{"dns", "1053", []string{""}, "dns://:1053"},
		{"dns", "53", nil, "dns://:53"},
		{"dns", "1053", []string{"127.0.0.1"}, "dns://127.0.0.1:1053"},
		{"dns", "1053", []string{"::1"}, "dns://[::1]:1053"},
		{"tls", "853", []string{"127.0.0.1", "::1"}, "tls://127.0.0.1:853"}, // the first of several
	} {
		cfg := &dnsserver.Config{Transport: tc.transport, Port: tc.port, ListenHosts: tc.hosts}
		if got := serverLabel(cfg); got != tc.want {
			t.Errorf("serverLabel(%s, %s, %q) = %q, want %q", tc.transport, tc.port, tc.hosts, got, tc.want)
		}
	}
}

// TestChangeLines checks the log line of each kind of state change, with the zones of every
// pool holding the backend.
func TestChangeLines(t *testing.T) {
	target := health.Target{Addr: netip.MustParseAddr("10.0.0.7"), Spec: health.Spec{Check: health.Check{Kind: health.TCP, Port: 8080}}}
	refused := errors.New("tcp :8080: connection refused")
	owners := []string{pool.Owner("dns://:1053", "app.lan."), pool.Owner("dns://:1053", "api.lan."), pool.Owner("dns://:1054", "app.lan.")}
	for _, tc := range []struct {
		c    health.Change
		want string
	}{
		{health.Change{Up: true, First: true, Streak: 1, Need: 1, Owners: owners}, "backend 10.0.0.7 (api.lan., app.lan.): up (first probe, tcp :8080)"},
		{health.Change{First: true, Err: refused, Streak: 1, Need: 1, Owners: owners[:1]}, "backend 10.0.0.7 (app.lan.): down (first probe): tcp :8080: connection refused"},
		{health.Change{Err: refused, Streak: 2, Need: 2, Owners: owners}, "backend 10.0.0.7 (api.lan., app.lan.): down: tcp :8080: connection refused (2/2)"},
		{health.Change{Up: true, Streak: 3, Need: 3, Owners: owners}, "backend 10.0.0.7 (api.lan., app.lan.): up: tcp :8080 passed (3/3)"},
		{health.Change{Err: refused, Streak: 2, Need: 2}, "backend 10.0.0.7: down: tcp :8080: connection refused (2/2)"},
	} {
		if got := changeLine(target, tc.c); got != tc.want {
			t.Errorf("changeLine(%+v)\n got %s\nwant %s", tc.c, got, tc.want)
		}
	}
}

// refuseAll fails every probe, as a TCP check of a closed port does, once open is closed.
type refuseAll struct{ open chan struct{} }

func (r refuseAll) probe(ctx context.Context, _ netip.Addr) error {
	select {
	case <-r.open:
	case <-ctx.Done():
	}
	return errors.New("tcp :80: connection refused")
}

// TestLogLines runs pools whose backends are all down and checks the exact lines an operator
// reads: each backend's first verdict with its zone, and what each all_down mode now answers.
func TestLogLines(t *testing.T) {
	lines := testkit.LogLines(t)
	cfgs := []poolConfig{
		testConfig("open.log.lan.", "10.9.0.1", "10.9.0.2"),
		testConfig("closed.log.lan.", "10.9.0.1"),
		testConfig("onward.log.lan.", "2001:db8::9", "10.9.0.2"),
	}
	cfgs[1].AllDown = pool.AllDownServfail
	cfgs[2].AllDown = pool.AllDownFallthrough
	gate := refuseAll{make(chan struct{})}
	reg := health.NewRegistry(observer{}, health.WithProbe(gate.probe))
	// Every pool holds its leases before the first probe ends, so that the first verdicts
	// name every zone: in the plugin a pool acquiring later is not named in a verdict already
	// given.
	for _, cfg := range cfgs {
		cfg.Server = "dns://:1053"
		p := newZonePool(cfg, reg)
		p.pool.Start()
		t.Cleanup(p.pool.Stop)
	}
	close(gate.open)

	var got []string
	deadline := time.Now().Add(10 * time.Second)
	for len(got) < 6 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
		got = got[:0]
		for _, l := range lines() {
			if strings.Contains(l, ".log.lan.") {
				got = append(got, l)
			}
		}
	}
	slices.Sort(got)
	want := []string{
		"[WARNING] plugin/healthdns: backend 10.9.0.1 (closed.log.lan., open.log.lan.): down (first probe): tcp :80: connection refused",
		"[WARNING] plugin/healthdns: backend 10.9.0.2 (onward.log.lan., open.log.lan.): down (first probe): tcp :80: connection refused",
		"[WARNING] plugin/healthdns: backend 2001:db8::9 (onward.log.lan.): down (first probe): tcp :80: connection refused",
		"[WARNING] plugin/healthdns: zone closed.log.lan.: every backend is down (1 configured): answering SERVFAIL to address queries (all_down servfail)",
		"[WARNING] plugin/healthdns: zone onward.log.lan.: every backend is down (2 configured): passing address queries to the next plugin (all_down fallthrough)",
		"[WARNING] plugin/healthdns: zone open.log.lan.: every backend is down (2 configured): serving all 2 configured addresses anyway (all_down serve_all)",
	}
	if !slices.Equal(got, want) {
		t.Errorf("log lines:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}
