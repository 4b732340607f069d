// Package pool keeps one zone's backends: their health leases, the live list a source delivers,
// priority groups and the fleet's agreement on them, drains, and the immutable snapshot of the
// answerable set that the query path reads. It knows nothing of DNS, caddy or HTTP: the plugin
// (the root package) answers from the snapshot, and the status package shows the read-only view
// (Status) and makes the three writes (Drain, Undrain, FailBack). See docs/DESIGN.md.
package pool

import (
	"net/netip"
	"time"

	clog "github.com/coredns/coredns/plugin/pkg/log"

	"github.com/healthdns/healthdns/balance"
	"github.com/healthdns/healthdns/event"
	"github.com/healthdns/healthdns/health"
)

// log is the plugin's: every line a pool logs is healthdns's to an operator.
var log = clog.NewWithPlugin("healthdns")

// MaxWeight bounds a backend's weight.
const MaxWeight = 1000

// Config is one zone's pool, as the plugin's setup parsed it.
type Config struct {
	Server   string // the server label of CoreDNS's metrics, for the pool's series
	Bind     string // the server block's first bind address, "" for none: with the host name and Server, it names this server's view in the fleet
	Zone     string // lower case, fully qualified
	Backends []Backend
	Spec     health.Spec    // timing: interval, fast interval, timeout, rise, fall
	Checks   []health.Check // a backend is up while every one passes
	Policy   string         // the balance policy's name: consistent_hash builds a table per snapshot
	AllDown  AllDownMode
	Preempt  balance.Preemption // how a higher priority group takes back from a lower one
	Source   Source             // backends_file or backends_etcd, Kind SourceNone for neither
	Quorum   Quorum             // fleet_quorum: the views that move the fleet's group, with etcd and nopreempt

	// FailBackAPI is the address of a status listener with a token that shows this pool, "" for
	// none: the nopreempt log line names it as a way to fail back.
	FailBackAPI string

	// State is the file that keeps the serving groups, the status API's drains and the last
	// known health across restarts; Path "" for none.
	State State

	// ReportToken is the bearer token of the zone's push check (check push TTL token FILE),
	// taken for POST /api/v1/report beside the status listener's; "" for none.
	ReportToken string

	// Events receives the pool's transitions (README, "Events"); nil for none.
	Events *event.Bus
}

// AllDownMode is what the zone answers while every backend in service is down.
type AllDownMode uint8

const (
	AllDownServeAll AllDownMode = iota
	AllDownServfail
	AllDownFallthrough
)

func (m AllDownMode) String() string {
	return [...]string{"serve_all", "servfail", "fallthrough"}[m]
}

// Backend is one backend line: of the Corefile, a backends file or an etcd key.
type Backend struct {
	Addr     netip.Addr
	Weight   uint32
	Priority uint8 // higher is preferred, as VRRP's
	Drain    Drain
}

// Drain takes a backend out of the answers, whatever its health, while it keeps being probed:
// an operator's maintenance window.
type Drain struct {
	On     bool
	Until  time.Time // zero: until the configuration changes
	Reason string
}

// At reports whether the drain holds at now.
func (d Drain) At(now time.Time) bool {
	return d.On && (d.Until.IsZero() || now.Before(d.Until))
}

// Owner names a pool in the health registry: its server and zone, so that
// health.Observer.Released deletes the series of exactly that pool when a reload drops the zone
// from one server block and not another. A server ("dns://127.0.0.1:53") holds no space, so a
// space separates.
func Owner(server, zone string) string { return server + " " + zone }
