package pool

import (
	"net/netip"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the series a pool keeps (docs/DESIGN.md, "Metrics"), by server, zone and backend
// or family or source.
type Metrics struct {
	BackendUp, BackendDrained, BackendInServiceUp, BackendDrainInfo *prometheus.GaugeVec // by server, zone, backend (drain_info: and reason, until, by)
	AnswersTotal                                                    *prometheus.CounterVec

	AllDownTotal, GroupSwitchesTotal *prometheus.CounterVec // by server, zone, family
	ServingPriority                  *prometheus.GaugeVec
	FleetDisagreement                *prometheus.GaugeVec

	ReportsRefusedTotal *prometheus.CounterVec // by server, zone, reason

	SourceErrorsTotal                                                   *prometheus.CounterVec // by server, zone, source
	SourceLastLoad, SourceLastError, SourceConnected, SourceSkippedKeys *prometheus.GaugeVec
}

// zoneSeries are the series labelled by the zone alone, which go once no pool serves it.
func (m *Metrics) zoneSeries() []interface {
	DeletePartialMatch(prometheus.Labels) int
} {
	return []interface {
		DeletePartialMatch(prometheus.Labels) int
	}{m.AllDownTotal, m.ServingPriority, m.ReportsRefusedTotal, m.FleetDisagreement, m.GroupSwitchesTotal, m.SourceErrorsTotal, m.SourceLastLoad, m.SourceLastError, m.SourceConnected, m.SourceSkippedKeys}
}

// DeleteBackend drops the series of a pool's backend: the health registry's observer calls it
// once the pool (its owner, Owner(server, zone)) holds no lease on the backend any more, which
// a reload's old and new pools of one zone share until the last lets go.
func (m *Metrics) DeleteBackend(server, zone string, addr netip.Addr) {
	labels := prometheus.Labels{"server": server, "zone": zone, "backend": addr.String()}
	m.BackendUp.Delete(labels)
	m.BackendDrained.Delete(labels)
	m.BackendInServiceUp.Delete(labels)
	m.BackendDrainInfo.DeletePartialMatch(labels)
	m.AnswersTotal.Delete(labels)
}

// NewMetrics makes the pools' series, unregistered: the plugin registers them once for the
// process (a reload runs setup again, and registering twice would panic), and a test makes its
// own, whose values are its alone.
func NewMetrics() *Metrics {
	return &Metrics{
		BackendUp: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: "coredns",
			Subsystem: "healthdns",
			Name:      "backend_up",
			Help:      "Whether a backend of a zone passed its health check (1) or not (0).",
		}, []string{"server", "zone", "backend"}),
		BackendDrained: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: "coredns",
			Subsystem: "healthdns",
			Name:      "backend_drained",
			Help:      "Whether a backend of a zone is drained (1): probed but not answered, whatever its health.",
		}, []string{"server", "zone", "backend"}),
		BackendInServiceUp: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: "coredns",
			Subsystem: "healthdns",
			Name:      "backend_in_service_up",
			Help:      "Whether a backend of a zone is in service (not drained) and passes its health check (1) or not (0); a zone with none answers drained or dead backends, or as all_down says.",
		}, []string{"server", "zone", "backend"}),
		BackendDrainInfo: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: "coredns",
			Subsystem: "healthdns",
			Name:      "backend_drain_info",
			Help:      "1 for each drained backend: the drain's reason (at most 64 characters), its end (RFC 3339, empty for none) and who set it (config or api).",
		}, []string{"server", "zone", "backend", "reason", "until", "by"}),
		AllDownTotal: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "coredns",
			Subsystem: "healthdns",
			Name:      "all_down_total",
			Help:      "Times every backend of a zone's address family went down.",
		}, []string{"server", "zone", "family"}),
		ServingPriority: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: "coredns",
			Subsystem: "healthdns",
			Name:      "serving_priority",
			Help:      "The priority group a zone's address family is answered from; 0 while none has a healthy backend.",
		}, []string{"server", "zone", "family"}),
		FleetDisagreement: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: "coredns",
			Subsystem: "healthdns",
			Name:      "fleet_disagreement",
			Help:      "Whether this server sees the priority group its fleet agreed (backends_etcd, nopreempt, fleet_quorum) with no healthy backend while a quorum of the fleet's views keeps it (1): it answers from its own choice meanwhile.",
		}, []string{"server", "zone", "family"}),
		GroupSwitchesTotal: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "coredns",
			Subsystem: "healthdns",
			Name:      "group_switches_total",
			Help:      "Times the priority group a zone's address family is answered from changed.",
		}, []string{"server", "zone", "family"}),
		ReportsRefusedTotal: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "coredns",
			Subsystem: "healthdns",
			Name:      "reports_refused_total",
			Help:      "Reports to POST /api/v1/report that a zone refused, by reason: unlisted (no such backend in the zone) or no_push (the zone has no push check).",
		}, []string{"server", "zone", "reason"}),
		SourceErrorsTotal: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "coredns",
			Subsystem: "healthdns",
			Name:      "source_errors_total",
			Help:      "Loads of a zone's live backend list (source: file or etcd) that failed and kept the last good list, outages of its store, and keys of an etcd prefix skipped for a bad value.",
		}, []string{"server", "zone", "source"}),
		SourceLastLoad: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: "coredns",
			Subsystem: "healthdns",
			Name:      "source_last_load_timestamp_seconds",
			Help:      "When a zone's live backend list (source: file or etcd) was last loaded good, as a Unix time.",
		}, []string{"server", "zone", "source"}),
		SourceLastError: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: "coredns",
			Subsystem: "healthdns",
			Name:      "source_last_error_timestamp_seconds",
			Help:      "When a zone's live backend list (source: file or etcd) last failed to load or lost etcd, as a Unix time; later than the last good load while failing.",
		}, []string{"server", "zone", "source"}),
		SourceSkippedKeys: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: "coredns",
			Subsystem: "healthdns",
			Name:      "source_skipped_keys",
			Help:      "How many keys of a zone's etcd prefix the last list left out, each a backend that does not parse; the other keys apply.",
		}, []string{"server", "zone", "source"}),
		SourceConnected: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: "coredns",
			Subsystem: "healthdns",
			Name:      "source_connected",
			Help:      "Whether a zone's etcd source is reachable (1); while 0 the last good list and the last agreed priority group serve.",
		}, []string{"server", "zone", "source"}),
		AnswersTotal: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "coredns",
			Subsystem: "healthdns",
			Name:      "answers_total",
			Help:      "Address records served, by zone and backend.",
		}, []string{"server", "zone", "backend"}),
	}
}

// Collectors are the series to register.
func (m *Metrics) Collectors() []prometheus.Collector {
	return []prometheus.Collector{m.BackendUp, m.BackendDrained, m.BackendInServiceUp, m.BackendDrainInfo, m.AnswersTotal,
		m.AllDownTotal, m.GroupSwitchesTotal, m.ServingPriority, m.ReportsRefusedTotal, m.FleetDisagreement,
		m.SourceErrorsTotal, m.SourceLastLoad, m.SourceLastError, m.SourceConnected, m.SourceSkippedKeys}
}
