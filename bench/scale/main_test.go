package main

import (
	"strings"
	"testing"
	"time"

	"github.com/healthdns/healthdns/test/harness"
)

func TestCorefileSpreadsBackends(t *testing.T) {
	addrs := backendAddrs(25)
	if addrs[0] != "127.16.0.1" || addrs[24] != "127.16.0.25" {
		t.Fatalf("addresses %v", addrs)
	}
	conf := Spec{Zones: 10, Addrs: addrs, Check: "tcp", Port: 8080, Interval: time.Second, Timeout: 500 * time.Millisecond, DNSPort: 1053, MetricsPort: 9153, ReadyPort: 8181}.Corefile()
	if n := strings.Count(conf, "healthdns z"); n != 9 { // 3 per zone: 9 zones hold 25
		t.Errorf("%d zones:\n%s", n, conf)
	}
	if n := strings.Count(conf, "backend 127.16."); n != 25 {
		t.Errorf("%d backends", n)
	}
	if !strings.Contains(conf, "check tcp 8080") || !strings.Contains(conf, "prometheus 127.0.0.1:9153") ||
		!strings.Contains(conf, "ready 127.0.0.1:8181") || strings.Contains(conf, "pprof") {
		t.Errorf("Corefile:\n%s", conf)
	}
}

// The lateness histogram is summed over every label set, bucket by bucket, and its quantiles
// name the bucket they fall in.
func TestHistogramOf(t *testing.T) {
	m, err := harness.ParseMetrics(strings.NewReader(`# TYPE coredns_healthdns_probe_lateness_seconds histogram
coredns_healthdns_probe_lateness_seconds_bucket{check="tcp",le="0.001"} 6
coredns_healthdns_probe_lateness_seconds_bucket{check="tcp",le="0.01"} 8
coredns_healthdns_probe_lateness_seconds_bucket{check="tcp",le="+Inf"} 9
coredns_healthdns_probe_lateness_seconds_sum{check="tcp"} 0.1
coredns_healthdns_probe_lateness_seconds_count{check="tcp"} 9
coredns_healthdns_probe_lateness_seconds_bucket{check="icmp",le="0.001"} 0
coredns_healthdns_probe_lateness_seconds_bucket{check="icmp",le="0.01"} 0
coredns_healthdns_probe_lateness_seconds_bucket{check="icmp",le="+Inf"} 1
coredns_healthdns_probe_lateness_seconds_sum{check="icmp"} 1
coredns_healthdns_probe_lateness_seconds_count{check="icmp"} 1
`))
	if err != nil {
		t.Fatal(err)
	}
	h := histogramOf(m, "coredns_healthdns_probe_lateness_seconds")
	if got, want := h.counts, []float64{6, 8, 10}; len(got) != 3 || got[0] != want[0] || got[1] != want[1] || got[2] != want[2] {
		t.Fatalf("cumulative counts %v, want %v (bounds %v)", got, want, h.bounds)
	}
	for q, want := range map[float64]string{0.5: "≤ 1ms", 0.8: "≤ 10ms", 0.99: "> 10ms"} {
		if got := h.quantile(q); got != want {
			t.Errorf("quantile(%v) = %q, want %q", q, got, want)
		}
	}
	if got := h.minus(h).quantile(0.5); got != "n/a" {
		t.Errorf("quantile of an empty difference = %q, want n/a", got)
	}
}

func TestCorefileHTTPCheck(t *testing.T) {
	conf := Spec{Zones: 1, Addrs: backendAddrs(2), Check: "http", Port: 8080, Interval: time.Second, Timeout: 500 * time.Millisecond}.Corefile()
	if !strings.Contains(conf, "check http 8080\n") {
		t.Errorf("Corefile:\n%s", conf)
	}
}
