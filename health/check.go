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
	"strings"
	"time"
)

// CheckKind names a kind of probe.
type CheckKind uint8

// The probe kinds.
const (
	ICMP CheckKind = iota
	TCP
	HTTP
	HTTPS
	Exec
	Push // the backend reports itself (Monitor.Report); no report within TTL is a failure
)

var kindNames = [...]string{ICMP: "icmp", TCP: "tcp", HTTP: "http", HTTPS: "https", Exec: "exec", Push: "push"}

func (k CheckKind) String() string {
	if int(k) < len(kindNames) {
		return kindNames[k]
	}
	return fmt.Sprintf("check(%d)", uint8(k))
}

// Check is what is probed. It is comparable, so that it can be part of a Target's identity:
// lists are kept as strings.
type Check struct {
	Kind CheckKind
	Port uint16 // tcp, http, https

	// http and https
	Path        string // "/" when empty
	Host        string // Host header, SNI and verified name; the backend's address when empty
	Expect      string // status codes as wire.ParseStatusCodes reads them; 200-399 when empty
	Body        string // text the body must hold
	BodyExact   bool   // the body, white space around it aside, must be Body and nothing else
	TLSCA       string // https: a CA file to verify against instead of the system roots
	TLSInsecure bool   // https: do not verify

	// exec
	Command string // the script's path
	Args    string // its arguments, each followed by a NUL

	// push: how long a report holds. It is the check's, not the pool's timing, so that two
	// pools with other intervals that name the same backend share its reports.
	TTL time.Duration
}

// String names the check in logs, errors and metrics: "icmp", "tcp :80", "http :80/healthz",
// "exec /usr/local/bin/check-db".
func (c Check) String() string {
	switch c.Kind {
	case TCP:
		return fmt.Sprintf("tcp :%d", c.Port)
	case HTTP, HTTPS:
		path := c.Path
		if path == "" {
			path = "/"
		}
		return fmt.Sprintf("%s :%d%s", c.Kind, c.Port, path)
	case Exec:
		return "exec " + c.Command
	case Push:
		return "push " + c.TTL.String()
	}
	return c.Kind.String()
}

// ExecArgs returns the arguments of an exec check.
func (c Check) ExecArgs() []string {
	if c.Args == "" {
		return nil
	}
	return strings.Split(strings.TrimSuffix(c.Args, "\x00"), "\x00")
}

// JoinArgs keeps exec arguments in a Check.
func JoinArgs(args []string) string {
	var b strings.Builder
	for _, a := range args {
		b.WriteString(a)
		b.WriteByte(0)
	}
	return b.String()
}

// Spec is everything that decides a target's verdict. Two pools naming the same address with the
// same Spec share one probe loop.
type Spec struct {
	Check    Check
	Interval time.Duration
	Fast     time.Duration // the interval while in doubt (HAProxy's fastinter); 0: off
	Timeout  time.Duration
	Rise     int
	Fall     int
}

// For returns the spec of check c under s's timing. A push check's timing is its TTL alone
// (interval and timeout mean nothing to it), so that a reload changing the pool's interval or
// timeout keeps its monitor, and with it the reports it has taken.
func (s Spec) For(c Check) Spec {
	s.Check = c
	if c.Kind == Push {
		s.Interval, s.Timeout = c.TTL, 0
		if s.Fast >= c.TTL {
			s.Fast = 0
		}
	}
	return s
}

// Target is one probe loop's identity; it is comparable and used as a map key.
type Target struct {
	Addr netip.Addr
	Spec Spec
}

func (t Target) String() string { return t.Addr.String() + " " + t.Spec.Check.String() }
