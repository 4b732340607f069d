package health

import (
	"context"
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

// Probe implements Prober. One pro-bing Pinger per probe: it opens its own socket, which also
// means each probe only sees its own replies.
func (p ICMPProber) Probe(ctx context.Context, addr netip.Addr) error {
	timeout := time.Second
	if deadline, ok := ctx.Deadline(); ok {
		timeout = time.Until(deadline)
	}
	if timeout <= 0 {
		return fmt.Errorf("icmp: no reply: %w", context.DeadlineExceeded)
	}
	pinger := probing.New("")
	// SetIPAddr before running, so pro-bing does not resolve (which ignores ctx).
	pinger.SetIPAddr(&net.IPAddr{IP: addr.AsSlice()})
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
	if err := pinger.RunWithContext(ctx); err != nil {
		return fmt.Errorf("icmp: %w", err)
	}
	// A timeout is not an error to pro-bing: only a received reply is a pass.
	if pinger.Statistics().PacketsRecv == 0 {
		return fmt.Errorf("icmp: no reply within %s", timeout.Round(time.Millisecond))
	}
	return nil
}
