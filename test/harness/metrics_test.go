package harness

import (
	"strings"
	"testing"
)

// A scrape as client_golang writes it: a labelled counter with an escaped label value, a gauge
// and a histogram, which Prometheus's parser flattens into _bucket, _sum and _count samples.
const exposition = `# HELP coredns_healthdns_probes_total Probes.
# TYPE coredns_healthdns_probes_total counter
coredns_healthdns_probes_total{backend="127.0.0.1",result="success",zone="a.lan."} 3
coredns_healthdns_probes_total{backend="127.0.0.2",result="failure",zone="a.lan."} 2
coredns_healthdns_probes_total{backend="127.0.0.2",result="success",zone="quote\"d.lan."} 1
# TYPE go_goroutines gauge
go_goroutines 42
# TYPE coredns_healthdns_probe_lateness_seconds histogram
coredns_healthdns_probe_lateness_seconds_bucket{le="0.005"} 7
coredns_healthdns_probe_lateness_seconds_bucket{le="+Inf"} 9
coredns_healthdns_probe_lateness_seconds_sum 0.5
coredns_healthdns_probe_lateness_seconds_count 9
`

func TestParseMetrics(t *testing.T) {
	m, err := ParseMetrics(strings.NewReader(exposition))
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]string{
		"coredns_healthdns_probes_total":           "counter",
		"go_goroutines":                            "gauge",
		"coredns_healthdns_probe_lateness_seconds": "histogram",
	} {
		if got := m.Types[name]; got != want {
			t.Errorf("type of %s = %q, want %q", name, got, want)
		}
	}
	for _, tc := range []struct {
		name  string
		want  map[string]string
		value float64
		found bool
	}{
		{"coredns_healthdns_probes_total", nil, 6, true},
		{"coredns_healthdns_probes_total", map[string]string{"zone": "a.lan"}, 5, true}, // zones match with or without the dot
		{"coredns_healthdns_probes_total", map[string]string{"backend": "127.0.0.2", "result": "failure"}, 2, true},
		{"coredns_healthdns_probes_total", map[string]string{"zone": `quote"d.lan.`}, 1, true},
		{"coredns_healthdns_probes_total", map[string]string{"backend": "127.0.0.3"}, 0, false},
		{"go_goroutines", nil, 42, true},
		{"coredns_healthdns_probe_lateness_seconds_bucket", map[string]string{"le": "+Inf"}, 9, true},
		{"coredns_healthdns_probe_lateness_seconds_bucket", map[string]string{"le": "0.005"}, 7, true},
		{"coredns_healthdns_probe_lateness_seconds_count", nil, 9, true},
		{"coredns_healthdns_probe_lateness_seconds_sum", nil, 0.5, true},
	} {
		v, found := m.Value(tc.name, tc.want)
		if v != tc.value || found != tc.found {
			t.Errorf("Value(%s, %v) = %v, %v; want %v, %v", tc.name, tc.want, v, found, tc.value, tc.found)
		}
	}
}

func TestParseMetricsRejectsGarbage(t *testing.T) {
	if _, err := ParseMetrics(strings.NewReader("not a metric line at all {\n")); err == nil {
		t.Error("no error for a line that is not the text format")
	}
}
