package health

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	probing "github.com/prometheus-community/pro-bing"
)

// ICMPProber passes when an echo request to the address is answered.
type ICMPProber struct {
	// Privileged selects a raw socket (needs CAP_NET_RAW) over an unprivileged datagram ping
	// socket (needs net.ipv4.ping_group_range to include the process's group).
	Privileged bool
}

// icmpFallbackTimeout bounds a probe whose context has no deadline: pro-bing's own default
// Timeout is forever.
const icmpFallbackTimeout = time.Second

// Probe implements Prober. One pro-bing Pinger per probe: it opens its own socket and runs three
// goroutines until the probe returns. In unprivileged mode the kernel hands each datagram ping
// socket only its own replies; a raw socket sees every ICMP packet of the host, which is why
// NewProber prefers RawICMPProber in privileged mode.
func (p ICMPProber) Probe(ctx context.Context, addr netip.Addr) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("icmp: not sent: %w", err)
	}
	timeout := icmpFallbackTimeout
	if deadline, ok := ctx.Deadline(); ok {
		timeout = time.Until(deadline)
	}
	within := probeTimeout(ctx)
	if within <= 0 {
		within = timeout
	}
	if timeout <= 0 { // pro-bing's ticker would panic on it
		return fmt.Errorf("icmp: %w", errNoReply{within})
	}
	addr = addr.Unmap()
	pinger := probing.New("")
	// SetIPAddr before running, so pro-bing does not resolve (which ignores ctx).
	pinger.SetIPAddr(&net.IPAddr{IP: addr.AsSlice(), Zone: addr.Zone()})
	if addr.Is4() {
		pinger.SetNetwork("ip4")
	} else {
		pinger.SetNetwork("ip6")
	}
	pinger.Count = 1
	pinger.Timeout = timeout
	pinger.RecordRtts = false
	pinger.RecordTTLs = false
	// The default logger prints "FATAL" lines, and a nil one panics.
	pinger.SetLogger(probing.NoopLogger{})
	pinger.SetPrivileged(p.Privileged)
	err := pinger.RunWithContext(ctx)
	if err == nil && pinger.Statistics().PacketsRecv > 0 {
		return nil
	}
	// An unanswered echo ends one of two ways, whichever timer fires first: pro-bing's Timeout
	// returns nil (a timeout is not an error to it), the context's deadline returns
	// DeadlineExceeded. Both mean the same, so both read the same.
	if err == nil || errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("icmp: %w", errNoReply{within})
	}
	return fmt.Errorf("icmp: %w", err)
}

// errNoReply says an echo request went unanswered for the probe's whole timeout. It matches
// context.DeadlineExceeded, as a TCP dial that timed out does.
type errNoReply struct{ within time.Duration }

func (e errNoReply) Error() string { return "no reply within " + formatTimeout(e.within) }

func (e errNoReply) Unwrap() error { return context.DeadlineExceeded }
