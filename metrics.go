package healthdns

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/coredns/caddy"
	"github.com/coredns/coredns/plugin"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/healthdns/healthdns/event"
	"github.com/healthdns/healthdns/health"
	"github.com/healthdns/healthdns/notify"
	"github.com/healthdns/healthdns/pool"
)

// Package-level promauto collectors, as CoreDNS's own plugins do: a reload runs setup again, and
// registering in setup would panic the second time.
var (
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

	probeFailuresTotal = promauto.NewCounterVec(prometheus.CounterOpts{
		Namespace: plugin.Namespace,
		Subsystem: "healthdns",
		Name:      "probe_failures_total",
		Help:      "Failed health probes by backend, check and reason: refused, timeout, unreachable, http_status, http_body, tls, exec_exit, push_fail, push_missed or error.",
	}, []string{"backend", "check", "reason"})

	transitionsTotal = promauto.NewCounterVec(prometheus.CounterOpts{
		Namespace: plugin.Namespace,
		Subsystem: "healthdns",
		Name:      "transitions_total",
		Help:      "Backend state changes after rise or fall consecutive results, by the state entered.",
	}, []string{"backend", "check", "to"})
)

func splitOwner(owner string) (server, zone string) {
	server, zone, _ = strings.Cut(owner, " ")
	return server, zone
}

// poolMetrics are the pools' series (pool.Metrics), registered once for the process.
var poolMetrics = func() *pool.Metrics {
	m := pool.NewMetrics()
	prometheus.MustRegister(m.Collectors()...)
	return m
}()

// notifyMetrics are the notify targets' series (notify.Metrics), registered once for the process.
var notifyMetrics = func() *notify.Metrics {
	m := notify.NewMetrics()
	prometheus.MustRegister(m.Collectors()...)
	return m
}()

// newProcessEvents makes the process's events (README, "Events"): one bus, whose ring and
// sequence a reload keeps, so that a subscriber catching up after one loses nothing. It is made
// at the first setup, once CoreDNS has set its version.
func newProcessEvents() *event.Bus {
	total := event.NewTotal()
	prometheus.MustRegister(total)
	return event.NewBus(caddy.AppVersion, total)
}

// observer turns health events into metrics and one log line per state change.
type observer struct{}

// ProbeRecorder resolves the target's series once: at 10,000 probes a second, looking them up by
// label values at every probe (hashing the labels, formatting the address and the check) was 8%
// of the process's CPU (bench/RESULTS.md).
//
// Every series names the check alike ("tcp :8080", as the log lines do), so the histograms join
// probes_total; they have one series per distinct check, not per backend.
func (observer) ProbeRecorder(t health.Target) func(health.Result) {
	backend, check := t.Addr.String(), t.Spec.Check.String()
	duration := probeDuration.WithLabelValues(check)
	lateness := probeLateness.WithLabelValues(check)
	success := probesTotal.WithLabelValues(backend, check, "success")
	failure := probesTotal.WithLabelValues(backend, check, "failure")
	// A target fails for one reason or two in its life: they are resolved as they come, on the
	// loop's goroutine, which is the only caller.
	byReason := map[string]prometheus.Counter{}
	return func(r health.Result) {
		duration.Observe(r.Took.Seconds())
		lateness.Observe(r.Late.Seconds())
		if r.Err == nil {
			success.Inc()
			return
		}
		failure.Inc()
		reason := health.Reason(r.Err)
		c, ok := byReason[reason]
		if !ok {
			c = probeFailuresTotal.WithLabelValues(backend, check, reason)
			byReason[reason] = c
		}
		c.Inc()
	}
}

func (observer) Changed(t health.Target, c health.Change) {
	if c.Up {
		log.Info(changeLine(t, c))
	} else {
		log.Warning(changeLine(t, c))
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

// changeLine is the log line of a state change. It names the zones of every pool that holds
// the backend's monitor (one is shared by all the pools naming the same target), since the
// address alone does not say what an operator should look at:
//
//	backend 10.0.0.7 (api.lan., app.lan.): down: tcp :8080: connection refused (2/2)
func changeLine(t health.Target, c health.Change) string {
	who := t.Addr.String()
	if zones := ownerZones(c.Owners); zones != "" {
		who += " (" + zones + ")"
	}
	// A push check's first verdict is a report, or a TTL that passed without one; and what the
	// node said of itself when it came up is worth the line (a failure's output is its error).
	first, said := "first probe", ""
	if t.Spec.Check.Kind == health.Push {
		first = "first verdict"
	}
	if c.Output != "" {
		said = ": " + c.Output
	}
	switch {
	case c.First && c.Up:
		return fmt.Sprintf("backend %s: up (%s, %s)%s", who, first, t.Spec.Check, said)
	case c.First:
		return fmt.Sprintf("backend %s: down (%s): %v", who, first, c.Err)
	case c.Up:
		return fmt.Sprintf("backend %s: up: %s passed (%d/%d)%s", who, t.Spec.Check, c.Streak, c.Need, said)
	}
	return fmt.Sprintf("backend %s: down: %v (%d/%d)", who, c.Err, c.Streak, c.Need)
}

// ownerZones lists the owners' zones, sorted and each once: the same zone in two server
// blocks is one name to an operator.
func ownerZones(owners []string) string {
	zones := make([]string, 0, len(owners))
	for _, o := range owners {
		_, zone := splitOwner(o)
		zones = append(zones, zone)
	}
	slices.Sort(zones)
	return strings.Join(slices.Compact(zones), ", ")
}

// Released drops the series of a pool's backend once the pool (owner: its server and zone)
// holds no lease on it any more: a reload dropped the backend, or the zone, from that block.
func (observer) Released(owner string, addr netip.Addr) {
	server, zone := splitOwner(owner)
	poolMetrics.DeleteBackend(server, zone, addr)
}

// Stopped drops the series of a check that no loop runs any more.
func (observer) Stopped(addr netip.Addr, check health.Check) {
	labels := prometheus.Labels{"backend": addr.String(), "check": check.String()}
	probesTotal.DeletePartialMatch(labels)
	probeFailuresTotal.DeletePartialMatch(labels)
	transitionsTotal.DeletePartialMatch(labels)
}

// checkerLastTick is each probe loop's last wake, read from the registry at scrape time: a loop
// with targets wakes at least once a second, so time() minus this growing past a few seconds
// means the checker is stalled and every backend's state is stale (the CheckerStalled alert).
var checkerLastTick = prometheus.NewDesc(
	prometheus.BuildFQName(plugin.Namespace, "healthdns", "checker_last_tick_timestamp_seconds"),
	"When each probe loop of the health checker last woke, as a Unix time; one series per wire while it runs.",
	[]string{"wire"}, nil)

type checkerCollector struct{ reg *health.Registry }

func (checkerCollector) Describe(ch chan<- *prometheus.Desc) { ch <- checkerLastTick }

func (c checkerCollector) Collect(ch chan<- prometheus.Metric) {
	for _, l := range c.reg.Loops() {
		if l.Running && !l.LastTick.IsZero() {
			ch <- prometheus.MustNewConstMetric(checkerLastTick, prometheus.GaugeValue, float64(l.LastTick.UnixNano())/1e9, l.Wire)
		}
	}
}

// execWaits and execWaitSeconds count the scripts (exec checks) that waited for their turn, the
// process running at most exec_concurrency at once, and how long: read from the registry at
// scrape time. A wait delays a probe and never fails it, so a rising rate here, not a failure,
// says the limit is too low for the scripts' count and length.
var (
	execWaits = prometheus.NewDesc(
		prometheus.BuildFQName(plugin.Namespace, "healthdns", "exec_waits_total"),
		"Scripts of exec checks that waited for their turn, exec_concurrency of them running already.",
		nil, nil)
	execWaitSeconds = prometheus.NewDesc(
		prometheus.BuildFQName(plugin.Namespace, "healthdns", "exec_wait_seconds_total"),
		"Time scripts of exec checks spent waiting for their turn, in all.",
		nil, nil)
)

type execCollector struct{ reg *health.Registry }

func (execCollector) Describe(ch chan<- *prometheus.Desc) { ch <- execWaits; ch <- execWaitSeconds }

func (c execCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.reg.ExecStats()
	ch <- prometheus.MustNewConstMetric(execWaits, prometheus.CounterValue, float64(st.Waits))
	ch <- prometheus.MustNewConstMetric(execWaitSeconds, prometheus.CounterValue, st.Waited.Seconds())
}

// Registered once, at package initialisation, as the promauto collectors are.
var _ = func() struct{} {
	prometheus.MustRegister(checkerCollector{proc.targets}, execCollector{proc.targets})
	return struct{}{}
}()
