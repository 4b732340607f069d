// Package event is what healthdns tells other systems: one JSON schema for every transition a
// pool decides (a backend up or down, a drain, a priority group switch, all down, a source's
// failure), kept in a bounded ring per process and handed to subscribers without ever making
// the pool wait. It imports nothing of healthdns: the pool publishes, the status listener reads.
package event

import (
	"encoding/json"
	"os"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Version is the schema's version, in every event: a field may be added within a version,
// never renamed or given another meaning.
const Version = 1

// Kind names a transition.
type Kind string

const (
	BackendUp        Kind = "backend_up"
	BackendDown      Kind = "backend_down"
	BackendDrained   Kind = "backend_drained"
	BackendUndrained Kind = "backend_undrained"
	GroupSwitched    Kind = "group_switched"
	AllDown          Kind = "all_down"
	AllDownOver      Kind = "all_down_over"
	SourceFailed     Kind = "source_failed"
	SourceRecovered  Kind = "source_recovered"
	BackendAdded     Kind = "backend_added"
	BackendRemoved   Kind = "backend_removed"
	BackendSet       Kind = "backend_set"
	BackendDeleted   Kind = "backend_deleted"
	CheckerStalled   Kind = "checker_stalled"
	CheckerRecovered Kind = "checker_recovered"
)

// Kinds are every kind published, in the README's order.
var Kinds = []Kind{BackendUp, BackendDown, BackendDrained, BackendUndrained, BackendAdded, BackendRemoved, BackendSet, BackendDeleted, GroupSwitched, AllDown, AllDownOver, SourceFailed, SourceRecovered, CheckerStalled, CheckerRecovered}

// Event is one transition, as every channel delivers it (README, "Events"). Fields a kind has
// no use for are left out of its JSON.
type Event struct {
	Version  int       `json:"version"`
	Seq      uint64    `json:"seq"` // per process, from 1, without gaps; a reload keeps counting
	Kind     Kind      `json:"kind"`
	Time     time.Time `json:"time"`
	Server   string    `json:"server"`
	Zone     string    `json:"zone"`
	Instance Instance  `json:"instance"`

	Backend string `json:"backend,omitempty"` // backend_*: its address
	Check   string `json:"check,omitempty"`   // backend_down: the check that failed ("tcp :8080")
	Reason  string `json:"reason,omitempty"`  // backend_down: the failure's code (refused, timeout, ...); drains: the drain's reason
	Error   string `json:"error,omitempty"`   // backend_down, source_failed: what failed
	Until   string `json:"until,omitempty"`   // backend_drained: the drain's end (RFC 3339), none for none
	By      string `json:"by,omitempty"`      // backend_drained, backend_undrained, group_switched by a fail-back, backend_set, backend_deleted: config, or api and the caller ("api 10.0.0.5:41234")
	Value   string `json:"value,omitempty"`   // backend_set: the etcd value written ("weight 2 priority 200"), none for the defaults; backend_deleted: the value deleted

	Family string `json:"family,omitempty"` // group_switched, all_down*: ipv4 or ipv6 (all_down*: empty for the pool)
	From   *uint8 `json:"from,omitempty"`   // group_switched: the group served before, 0 for none
	To     *uint8 `json:"to,omitempty"`     // group_switched: the group served now, 0 for none
	Why    string `json:"why,omitempty"`    // group_switched: preempt, failover, fail-back or the fleet's agreement, in words

	Source string `json:"source,omitempty"` // source_*, backend_added, backend_removed, backend_set, backend_deleted: file or etcd

	Wire string `json:"wire,omitempty"` // checker_*: the probe loop (icmp, tcp_syn, tcp_connect, blocking)
}

// Instance says which healthdns process an event comes from.
type Instance struct {
	Host    string `json:"host"`
	Version string `json:"version"`
}

// Group returns g as a From or To field.
func Group(g uint8) *uint8 { return &g }

// RingSize is how many of the last events a Bus keeps for a subscriber catching up.
const RingSize = 1000

// subscriberBuffer is how many events a subscriber may fall behind before it loses some.
const subscriberBuffer = 256

// Bus numbers events, keeps the last RingSize and hands them to its subscribers. Publish never
// waits for a subscriber: one too slow to take an event loses it, counted on its Subscription.
type Bus struct {
	instance Instance
	total    *prometheus.CounterVec // by kind; nil for none

	mu   sync.Mutex
	seq  uint64
	ring []Event // the last RingSize events, oldest at ring[start]
	next int     // where the next event goes once the ring is full
	subs map[*Subscription]struct{}
}

// NewBus makes a bus whose events name the host and version; total, if not nil, counts them by
// kind.
func NewBus(version string, total *prometheus.CounterVec) *Bus {
	host, _ := os.Hostname()
	return &Bus{instance: Instance{Host: host, Version: version}, total: total, subs: map[*Subscription]struct{}{}}
}

// NewTotal makes the events_total series, unregistered: the process registers it once.
func NewTotal() *prometheus.CounterVec {
	return prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "coredns",
		Subsystem: "healthdns",
		Name:      "events_total",
		Help:      "Events published (README, \"Events\"), by kind.",
	}, []string{"kind"})
}

// Publish stamps e with the next sequence number, the time if it has none, the schema's
// version and the instance, keeps it and offers it to every subscriber. A nil Bus drops it, so
// that a pool without one (a test's) needs no check.
func (b *Bus) Publish(e Event) {
	if b == nil {
		return
	}
	if e.Time.IsZero() {
		e.Time = time.Now()
	}
	e.Version, e.Instance = Version, b.instance
	b.mu.Lock()
	b.seq++
	e.Seq = b.seq
	if len(b.ring) < RingSize {
		b.ring = append(b.ring, e)
	} else {
		b.ring[b.next] = e
		b.next = (b.next + 1) % RingSize
	}
	for s := range b.subs {
		select {
		case s.c <- e:
		default:
			s.dropped++
		}
	}
	b.mu.Unlock()
	if b.total != nil {
		b.total.WithLabelValues(string(e.Kind)).Inc()
	}
}

// Since returns the kept events after sequence number seq, oldest first, and whether the ring
// still held every one of them (false when some were overwritten before they could be read).
// A seq beyond the last published is from before a restart, which counted from 1 again: every
// kept event is after it.
func (b *Bus) Since(seq uint64) ([]Event, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.sinceLocked(seq)
}

func (b *Bus) sinceLocked(seq uint64) ([]Event, bool) {
	restarted := seq > b.seq
	if restarted {
		seq = 0
	}
	ordered := append(append([]Event(nil), b.ring[b.next:]...), b.ring[:b.next]...)
	var out []Event
	for _, e := range ordered {
		if e.Seq > seq {
			out = append(out, e)
		}
	}
	complete := seq >= b.seq || len(ordered) > 0 && ordered[0].Seq <= seq+1
	return out, complete && !restarted
}

// Subscription is one subscriber's feed of events.
type Subscription struct {
	c       chan Event
	bus     *Bus
	dropped uint64 // guarded by bus.mu
}

// Subscribe returns the kept events after seq (see Since) and a subscription to every event
// published from then on: none is missed between the two, nor given twice.
func (b *Bus) Subscribe(seq uint64) (backlog []Event, complete bool, s *Subscription) {
	b.mu.Lock()
	defer b.mu.Unlock()
	s = &Subscription{c: make(chan Event, subscriberBuffer), bus: b}
	b.subs[s] = struct{}{}
	backlog, complete = b.sinceLocked(seq)
	return backlog, complete, s
}

// Follow returns a subscription to the events published from now on, without a backlog: a
// notify target that starts hears of what happens after it started, never of the ring's past.
func (b *Bus) Follow() *Subscription {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := &Subscription{c: make(chan Event, subscriberBuffer), bus: b}
	b.subs[s] = struct{}{}
	return s
}

// Events is the subscription's feed; it is never closed (Close stops it).
func (s *Subscription) Events() <-chan Event { return s.c }

// Dropped returns how many events the subscriber lost for taking them too slowly.
func (s *Subscription) Dropped() uint64 {
	s.bus.mu.Lock()
	defer s.bus.mu.Unlock()
	return s.dropped
}

// Close ends the subscription.
func (s *Subscription) Close() {
	s.bus.mu.Lock()
	delete(s.bus.subs, s)
	s.bus.mu.Unlock()
}

// JSON is the event as every channel sends it.
func (e Event) JSON() []byte {
	data, _ := json.Marshal(e) // an Event has only strings, numbers and times: it always marshals
	return data
}
