package healthdns

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	dto "github.com/prometheus/client_model/go"

	"github.com/healthdns/healthdns/health"
)

// TestMetricNames lints our collectors as CoreDNS's own test/metric_naming_test.go does.
func TestMetricNames(t *testing.T) {
	target := health.Target{Addr: netip.MustParseAddr("192.0.2.1"), Spec: health.Spec{Check: health.Check{Kind: health.TCP, Port: 80}}}
	observer{}.ProbeRecorder(target)(health.Result{Took: time.Millisecond})
	observer{}.Changed(target, health.Change{Up: true})
	backendUp.WithLabelValues("lint.lan.", "192.0.2.1").Set(1)
	allDownTotal.WithLabelValues("lint.lan.", "ipv4").Inc()
	answersTotal.WithLabelValues("lint.lan.", "192.0.2.1").Inc()

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
	if len(ours) != 7 {
		t.Errorf("%d healthdns metric families, want 7", len(ours))
	}
	problems, err := promlint.NewWithMetricFamilies(ours).Lint()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("%s: %s", p.Metric, p.Text)
	}

	// A backend dropped by a reload loses its series.
	observer{}.Released("lint.lan.", target.Addr)
	observer{}.Stopped(target.Addr, target.Spec.Check)
	if n := testutil.CollectAndCount(backendUp, "coredns_healthdns_backend_up"); n != 0 {
		t.Errorf("%d backend_up series after release", n)
	}
	if n := testutil.CollectAndCount(probesTotal, "coredns_healthdns_probes_total"); n != 0 {
		t.Errorf("%d probes_total series after stop", n)
	}
	allDownTotal.Reset()
}
