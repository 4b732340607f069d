// Package notify delivers the process's events (package event) to the targets of the Corefile's
// `notify` lines: a script run per event, or an HTTP POST per event. Each target has a bounded
// queue per zone and its own goroutines, so a script or a receiver that hangs delays its own
// queue and nothing else: the pools publish to the bus without waiting, and the bus hands each
// target its events without waiting either.
package notify

import (
	"context"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	clog "github.com/coredns/coredns/plugin/pkg/log"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/healthdns/healthdns/event"
)

var log = clog.NewWithPlugin("healthdns")

// Channels a target delivers by, as the metrics label them.
const (
	Exec = "exec"
	HTTP = "http"
)

// QueueSize is how many events of one zone a target keeps waiting for delivery; past it, the
// newest are dropped, counted and logged.
const QueueSize = 256

// DefaultTimeout bounds a script's run, or one HTTP request, when the line gives no timeout.
const DefaultTimeout = 10 * time.Second

// Target is one `notify` line.
type Target struct {
	Channel string        // Exec or HTTP
	Path    string        // exec: the script
	Args    []string      // exec: its arguments, {zone} {backend} {event} {state} {group} expanded
	URL     string        // http: where to POST
	Token   string        // http: the bearer token, "" for none
	Timeout time.Duration // of a run or a request
	Kinds   []event.Kind  // the kinds delivered; nil for all
}

// String names the target as logs do: "notify exec /usr/local/bin/on-event" or "notify http
// https://hooks.example/healthdns".
func (t Target) String() string {
	if t.Channel == Exec {
		return "notify exec " + t.Path
	}
	return "notify http " + t.URL
}

// key tells targets apart: a reload that keeps a line keeps its queues.
func (t Target) key() string {
	kinds := make([]string, len(t.Kinds))
	for i, k := range t.Kinds {
		kinds[i] = string(k)
	}
	return strings.Join([]string{t.Channel, t.Path, strings.Join(t.Args, "\x00"), t.URL, t.Token, t.Timeout.String(), strings.Join(kinds, ",")}, "\x01")
}

func (t Target) wants(k event.Kind) bool { return t.Kinds == nil || slices.Contains(t.Kinds, k) }

// Scope is the targets of one zone of one server: the `notify` lines of its block.
type Scope struct {
	Server, Zone string
	Targets      []Target
}

// Metrics are the series of notify targets, by channel.
type Metrics struct {
	Failures, Dropped *prometheus.CounterVec
	QueueDepth        *prometheus.GaugeVec
}

// NewMetrics makes the series, unregistered: the plugin registers them once for the process,
// and a test makes its own.
func NewMetrics() *Metrics {
	m := &Metrics{
		Failures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "coredns",
			Subsystem: "healthdns",
			Name:      "notify_failures_total",
			Help:      "Notify deliveries that failed, by channel: a script that failed or timed out, an HTTP request that failed or was not answered 2xx (each retry counts).",
		}, []string{"channel"}),
		Dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "coredns",
			Subsystem: "healthdns",
			Name:      "notify_dropped_total",
			Help:      "Events a notify target dropped because its queue was full, by channel.",
		}, []string{"channel"}),
		QueueDepth: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: "coredns",
			Subsystem: "healthdns",
			Name:      "notify_queue_depth",
			Help:      "Events waiting in notify targets' queues, by channel.",
		}, []string{"channel"}),
	}
	for _, ch := range []string{Exec, HTTP} { // a dashboard shows 0, not "no data", before the first event
		m.Failures.WithLabelValues(ch)
		m.Dropped.WithLabelValues(ch)
		m.QueueDepth.WithLabelValues(ch)
	}
	return m
}

// Collectors are the series to register.
func (m *Metrics) Collectors() []prometheus.Collector {
	return []prometheus.Collector{m.Failures, m.Dropped, m.QueueDepth}
}

// Hub runs the process's notify targets. A plugin instance acquires the scopes of its blocks
// when it starts and releases them when it stops: a reload's new instance acquires before the
// old one releases, so a target both name keeps running, with its queue and its subscription,
// and sees every event once.
type Hub struct {
	metrics *Metrics

	mu      sync.Mutex
	workers map[string]*worker
}

// NewHub makes a hub that counts in m.
func NewHub(m *Metrics) *Hub { return &Hub{metrics: m, workers: map[string]*worker{}} }

// Lease is what an Acquire holds, until its Release.
type Lease struct {
	hub     *Hub
	keys    []string
	release sync.Once
}

// Acquire starts the targets of scopes that do not run yet, subscribed to bus, and holds every
// one of them until the lease's Release.
func (h *Hub) Acquire(bus *event.Bus, scopes []Scope) *Lease {
	l := &Lease{hub: h}
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, s := range scopes {
		for _, t := range s.Targets {
			key := s.Server + "\x02" + s.Zone + "\x02" + t.key()
			w, ok := h.workers[key]
			if !ok {
				w = startWorker(bus, s.Server, s.Zone, t, h.metrics)
				h.workers[key] = w
			}
			w.refs++
			l.keys = append(l.keys, key)
		}
	}
	return l
}

// Release lets go of the lease's targets: those no other lease holds stop, their running
// script killed or request cancelled, and what they had queued is dropped (their line is gone).
// It returns once their goroutines have ended. A second Release does nothing.
func (l *Lease) Release() {
	l.release.Do(func() {
		h := l.hub
		var stopping []*worker
		h.mu.Lock()
		for _, key := range l.keys {
			w := h.workers[key]
			if w.refs--; w.refs == 0 {
				delete(h.workers, key)
				stopping = append(stopping, w)
			}
		}
		h.mu.Unlock()
		for _, w := range stopping {
			w.stop()
		}
	})
}

// Running says how many targets run, one per zone of each line: for tests.
func (h *Hub) Running() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.workers)
}

// worker delivers the events of one zone to one target, in order.
type worker struct {
	server, zone string
	target       Target
	deliver      func(context.Context, event.Event) error
	refs         int // guarded by Hub.mu

	sub     *event.Subscription
	queue   chan event.Event
	cancel  context.CancelFunc
	ctx     context.Context
	done    sync.WaitGroup
	metrics *Metrics

	dropMu      sync.Mutex
	dropped     uint64 // since the last log line about them
	busDropped  uint64 // the subscription's count already taken
	dropsLogged bool
}

func startWorker(bus *event.Bus, server, zone string, t Target, m *Metrics) *worker {
	w := &worker{server: server, zone: zone, target: t, sub: bus.Follow(), queue: make(chan event.Event, QueueSize), metrics: m}
	w.ctx, w.cancel = context.WithCancel(context.Background())
	if t.Channel == Exec {
		w.deliver = runScript(t, m.Failures.WithLabelValues(Exec))
	} else {
		w.deliver = post(t, m.Failures.WithLabelValues(HTTP))
	}
	w.done.Add(2)
	go w.dispatch()
	go w.deliverAll()
	return w
}

// dispatch takes the bus's events as they come, and queues the target's: it never waits for a
// delivery, so the bus never drops an event for a target's slowness, only the target's full
// queue does.
func (w *worker) dispatch() {
	defer w.done.Done()
	for {
		select {
		case <-w.ctx.Done():
			return
		case e := <-w.sub.Events():
			if e.Server != w.server || e.Zone != w.zone || !w.target.wants(e.Kind) {
				continue
			}
			select {
			case w.queue <- e:
				w.metrics.QueueDepth.WithLabelValues(w.target.Channel).Inc()
			default:
				w.drop(1)
			}
			if d := w.sub.Dropped(); d != w.busDropped {
				// Events of every zone, lost before they could be filtered: counted as this
				// target's, since some may have been.
				w.drop(d - w.busDropped)
				w.busDropped = d
			}
		}
	}
}

// drop counts n dropped events, and logs the first of a run of drops.
func (w *worker) drop(n uint64) {
	w.metrics.Dropped.WithLabelValues(w.target.Channel).Add(float64(n))
	w.dropMu.Lock()
	defer w.dropMu.Unlock()
	w.dropped += n
	if !w.dropsLogged {
		w.dropsLogged = true
		log.Warningf("%s: zone %s: queue full (%d events), dropping events until it drains; counted in coredns_healthdns_notify_dropped_total", w.target, w.zone, QueueSize)
	}
}

// deliverAll delivers the queue's events one after another.
func (w *worker) deliverAll() {
	defer w.done.Done()
	for {
		select {
		case <-w.ctx.Done():
			return
		case e := <-w.queue:
			w.metrics.QueueDepth.WithLabelValues(w.target.Channel).Dec()
			if err := w.deliver(w.ctx, e); err != nil && w.ctx.Err() == nil {
				log.Errorf("%s: zone %s: event %d (%s): %v", w.target, w.zone, e.Seq, e.Kind, err)
			}
			if len(w.queue) == 0 {
				w.drained()
			}
		}
	}
}

// drained logs, once the queue has emptied after dropping events, how many it dropped.
func (w *worker) drained() {
	w.dropMu.Lock()
	defer w.dropMu.Unlock()
	if w.dropsLogged {
		log.Infof("%s: zone %s: queue drained; %d events were dropped while it was full", w.target, w.zone, w.dropped)
		w.dropsLogged, w.dropped = false, 0
	}
}

// stop ends the worker's goroutines and subscription.
func (w *worker) stop() {
	w.cancel()
	w.done.Wait()
	w.sub.Close()
	if n := len(w.queue); n > 0 {
		w.metrics.QueueDepth.WithLabelValues(w.target.Channel).Sub(float64(n))
		log.Infof("%s: zone %s: stopped with %d events undelivered, its line gone from the Corefile", w.target, w.zone, n)
	}
}

// State is the one word {state} and HEALTHDNS_STATE give for an event: what its subject is now.
func State(e event.Event) string {
	switch e.Kind {
	case event.BackendUp:
		return "up"
	case event.BackendDown:
		return "down"
	case event.BackendDrained:
		return "drained"
	case event.BackendUndrained:
		return "undrained"
	case event.BackendAdded:
		return "added"
	case event.BackendRemoved:
		return "removed"
	case event.GroupSwitched, event.AllDownOver:
		return "serving"
	case event.AllDown:
		return "all_down"
	case event.SourceFailed:
		return "failed"
	case event.SourceRecovered:
		return "recovered"
	case event.CheckerStalled:
		return "stalled"
	case event.CheckerRecovered:
		return "running"
	}
	return string(e.Kind)
}

// Group is {group} and HEALTHDNS_GROUP: the group served now after a group_switched, "" for
// other kinds.
func Group(e event.Event) string {
	if e.To == nil {
		return ""
	}
	return strconv.Itoa(int(*e.To))
}
