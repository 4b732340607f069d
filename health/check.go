// Package health probes backends and keeps their up/down state with rise/fall hysteresis. It is
// what the plugin reads; docs/DESIGN.md draws the stack behind it.
//
// It knows nothing of DNS or CoreDNS: a Target is an address plus the Spec that decides its
// verdict, a Monitor holds one Target's state, and a Registry shares Monitors between everyone
// who asks for the same Target and picks the wire each check runs on. Every check runs on the
// schedule engine (internal/engine), one loop per wire: raw ICMP echo, half-open SYN and epoll
// connect (internal/wire, on raw sockets from internal/rawsock), and a blocking wire for what
// only a goroutine can wait on (pro-bing pings, plain dials).
package health

import (
	"fmt"
	"net/netip"
	"time"
)

// CheckKind names a kind of probe.
type CheckKind uint8

// The probe kinds.
const (
	ICMP CheckKind = iota
	TCP
)

func (k CheckKind) String() string {
	switch k {
	case ICMP:
		return "icmp"
	case TCP:
		return "tcp"
	}
	return fmt.Sprintf("check(%d)", uint8(k))
}

// Check is what is probed: the kind, and the port for TCP.
type Check struct {
	Kind CheckKind
	Port uint16
}

func (c Check) String() string {
	if c.Kind == TCP {
		return fmt.Sprintf("tcp :%d", c.Port)
	}
	return c.Kind.String()
}

// Spec is everything that decides a target's verdict. Two pools naming the same address with the
// same Spec share one probe loop.
type Spec struct {
	Check    Check
	Interval time.Duration
	Timeout  time.Duration
	Rise     int
	Fall     int
}

// Target is one probe loop's identity; it is comparable and used as a map key.
type Target struct {
	Addr netip.Addr
	Spec Spec
}

func (t Target) String() string { return t.Addr.String() + " " + t.Spec.Check.String() }
