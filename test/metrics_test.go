package test

import (
	"fmt"
	"testing"
	"time"
)

// TestMetrics checks that every documented series is exported with its labels.
func TestMetrics(t *testing.T) {
	t.Parallel()
	port := backendPort(t, "127.0.0.91")
	newBackend(t, "127.0.0.91", port) // 127.0.0.92 never listens
	s := startServer(t, corefile(".:{{DNS}} {\n bind 127.0.0.1\n prometheus 127.0.0.1:{{HTTP}}\n"+
		fastPool("metrics.lan", port, "", "127.0.0.91", "127.0.0.92")+
		fastPool("metricsdown.lan", port, "", "127.0.0.92")+"}\n"))
	for range 3 {
		s.addrs("metrics.lan.")
	}
	check := fmt.Sprintf("tcp :%d", port)
	want := map[string]func(float64) bool{
		`coredns_healthdns_backend_up{backend="127.0.0.91",zone="metrics.lan."}`:                      func(v float64) bool { return v == 1 },
		`coredns_healthdns_backend_up{backend="127.0.0.92",zone="metrics.lan."}`:                      func(v float64) bool { return v == 0 },
		`coredns_healthdns_probe_duration_seconds_count{check="tcp"}`:                                 func(v float64) bool { return v >= 2 },
		`coredns_healthdns_probe_lateness_seconds_count{check="tcp"}`:                                 func(v float64) bool { return v >= 2 },
		`coredns_healthdns_probes_total{backend="127.0.0.91",check="` + check + `",result="success"}`: func(v float64) bool { return v >= 1 },
		`coredns_healthdns_probes_total{backend="127.0.0.92",check="` + check + `",result="failure"}`: func(v float64) bool { return v >= 1 },
		`coredns_healthdns_answers_total{backend="127.0.0.91",zone="metrics.lan."}`:                   func(v float64) bool { return v == 3 },
		`coredns_healthdns_all_down_total{family="ipv4",zone="metricsdown.lan."}`:                     func(v float64) bool { return v == 1 },
	}
	eventually(t, 5*time.Second, "every series", func() bool {
		for series, ok := range want {
			if v, found := s.metric(series); !found || !ok(v) {
				return false
			}
		}
		return true
	})
	if _, found := s.metric(`coredns_healthdns_answers_total{backend="127.0.0.92",zone="metrics.lan."}`); found {
		t.Error("answers counted for a backend that was never answered")
	}
}
