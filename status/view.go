// Package status is healthdns's status surface: the listener, the page, /status.json (its
// schema, with its version) and the write API (drain, undrain, fail-back). It reads each pool
// through the pool's read-only view and writes through its three writes, nothing else, so it is
// tested with a fake pool and httptest, without CoreDNS (docs/DESIGN.md, "Status").
package status

import (
	"net/netip"
	"time"

	"github.com/healthdns/healthdns/event"
	"github.com/healthdns/healthdns/health"
	"github.com/healthdns/healthdns/pool"
)

// Config is a pool's `status [ADDRESS] [token FILE] [tls CERT KEY]`.
type Config struct {
	Addr  string // host:port; "" for none
	Token string // the bearer token every request must carry; "" for none
	TLS   *TLS   // nil for plain HTTP
	File  string // of the status line, for errors
	Line  int
}

// Pool is what the status surface needs of a pool (pool.Pool): its names, its read-only view,
// and the operator's three writes.
type Pool interface {
	Server() string
	Zone() string
	Status() pool.Status
	Drain(addr netip.Addr, d pool.Drain, by string) error
	Undrain(addr netip.Addr, by string) error
	FailBack(by string) ([]pool.FamilySwitch, error)
	// Report feeds a backend's report to the zone's push check; ReportToken is the token
	// that check takes for it besides the listener's, "" for none.
	Report(addr netip.Addr, r pool.Report, by string) (up bool, err error)
	ReportToken() string
}

// Shown is a pool on the page, with what the plugin answers from it.
type Shown struct {
	Pool    Pool
	Answers int    // records per answer
	TTL     uint32 // of each record
	Serial  uint32 // the zone's SOA serial, a hash of its configuration
}

// Process is what the page says of the server.
type Process struct {
	Version string
	Started time.Time
}

// View is what one plugin instance shows on one status address: the pools that name it.
type View struct {
	Config
	Pools   []Shown
	Loops   func() []health.LoopStatus // the registry's probe loops
	Process Process

	// Events is the process's events, which /api/v1/events streams; nil for none.
	Events *event.Bus

	guard *guard        // its listener's, set by Acquire; nil when served without one
	done  chan struct{} // closed by Release: its event streams end
}
