package healthdns

import (
	"net/netip"

	"github.com/coredns/coredns/plugin"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/healthdns/healthdns/health"
)

// Package-level promauto collectors, as CoreDNS's own plugins do: a reload runs setup again, and
// registering in setup would panic the second time.
var (
	backendUp = promauto.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: plugin.Namespace,
		Subsystem: "healthdns",
		Name:      "backend_up",
		Help:      "Whether a backend of a zone passed its health check (1) or not (0).",
	}, []string{"zone", "backend"})

	probeDuration = promauto.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: plugin.Namespace,
		Subsystem: "healthdns",
		Name:      "probe_duration_seconds",
		Help:      "Time a health probe took, successful or not.",
		Buckets:   []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
	}, []string{"check"})

	probeLateness = promauto.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: plugin.Namespace,
		Subsystem: "healthdns",
		Name:      "probe_lateness_seconds",
		Help:      "How long after its scheduled time a health probe started.",
		Buckets:   []float64{.0001, .0005, .001, .005, .01, .025, .05, .1, .25, .5, 1},
	}, []string{"check"})

	probesTotal = promauto.NewCounterVec(prometheus.CounterOpts{
		Namespace: plugin.Namespace,
		Subsystem: "healthdns",
		Name:      "probes_total",
		Help:      "Health probes by backend, check and result (success or failure).",
	}, []string{"backend", "check", "result"})

	transitionsTotal = promauto.NewCounterVec(prometheus.CounterOpts{
		Namespace: plugin.Namespace,
		Subsystem: "healthdns",
		Name:      "transitions_total",
		Help:      "Backend state changes after rise or fall consecutive results, by the state entered.",
	}, []string{"backend", "check", "to"})

	allDownTotal = promauto.NewCounterVec(prometheus.CounterOpts{
		Namespace: plugin.Namespace,
		Subsystem: "healthdns",
		Name:      "all_down_total",
		Help:      "Times every backend of a zone's address family went down.",
	}, []string{"zone", "family"})

	answersTotal = promauto.NewCounterVec(prometheus.CounterOpts{
		Namespace: plugin.Namespace,
		Subsystem: "healthdns",
		Name:      "answers_total",
		Help:      "Address records served, by zone and backend.",
	}, []string{"zone", "backend"})
)

// observer turns health events into metrics and one log line per state change.
type observer struct{}

// ProbeRecorder resolves the target's series once: at 10,000 probes a second, looking them up by
// label values at every probe (hashing the labels, formatting the address and the check) was 8%
// of the process's CPU (bench/RESULTS.md).
func (observer) ProbeRecorder(t health.Target) func(health.Result) {
	kind := t.Spec.Check.Kind.String()
	duration := probeDuration.WithLabelValues(kind)
	lateness := probeLateness.WithLabelValues(kind)
	backend, check := t.Addr.String(), t.Spec.Check.String()
	success := probesTotal.WithLabelValues(backend, check, "success")
	failure := probesTotal.WithLabelValues(backend, check, "failure")
	return func(r health.Result) {
		duration.Observe(r.Took.Seconds())
		lateness.Observe(r.Late.Seconds())
		if r.Err != nil {
			failure.Inc()
		} else {
			success.Inc()
		}
	}
}

func (observer) Changed(t health.Target, c health.Change) {
	switch {
	case c.First && c.Up:
		log.Infof("backend %s: up (first probe, %s)", t.Addr, t.Spec.Check)
	case c.First:
		log.Warningf("backend %s: down (first probe): %v", t.Addr, c.Err)
	case c.Up:
		log.Infof("backend %s: up: %s passed (%d/%d)", t.Addr, t.Spec.Check, c.Streak, c.Need)
	default:
		log.Warningf("backend %s: down: %v (%d/%d)", t.Addr, c.Err, c.Streak, c.Need)
	}
	if c.First {
		return
	}
	to := "down"
	if c.Up {
		to = "up"
	}
	transitionsTotal.WithLabelValues(t.Addr.String(), t.Spec.Check.String(), to).Inc()
}

// Released drops the zone's series of a backend that no configuration of the zone names any more.
func (observer) Released(zone string, addr netip.Addr) {
	labels := prometheus.Labels{"zone": zone, "backend": addr.String()}
	backendUp.Delete(labels)
	answersTotal.Delete(labels)
}

// Stopped drops the series of a check that no loop runs any more.
func (observer) Stopped(addr netip.Addr, check health.Check) {
	labels := prometheus.Labels{"backend": addr.String(), "check": check.String()}
	probesTotal.DeletePartialMatch(labels)
	transitionsTotal.DeletePartialMatch(labels)
}
