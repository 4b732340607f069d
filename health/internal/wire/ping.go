package wire

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync/atomic"
	"syscall"
	"time"

	probing "github.com/prometheus-community/pro-bing"
)

// icmpFallbackTimeout bounds a probe whose context has no deadline: pro-bing's own default
// Timeout is forever.
const icmpFallbackTimeout = time.Second

// Ping returns a blocking check that passes when an echo request to the address is answered.
// privileged selects a raw socket (needs CAP_NET_RAW) over an unprivileged datagram ping socket
// (needs net.ipv4.ping_group_range to include the process's group).
//
// One pro-bing Pinger per probe: it opens its own socket and runs three goroutines until the
// probe returns. In unprivileged mode the kernel hands each datagram ping socket only its own
// replies; a raw socket sees every ICMP packet of the host, which is why privileged pings go
// through Echo wherever it runs.
func Ping(privileged bool) func(ctx context.Context, addr netip.Addr) error {
	return func(ctx context.Context, addr netip.Addr) error { return ping(ctx, addr, privileged) }
}

func ping(ctx context.Context, addr netip.Addr, privileged bool) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("icmp: not sent: %w", err)
	}
	timeout := icmpFallbackTimeout
	if deadline, ok := ctx.Deadline(); ok {
		timeout = time.Until(deadline)
	}
	if timeout <= 0 { // pro-bing's ticker would panic on it
		return fmt.Errorf("icmp: %w", errNoReply{0})
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
	pinger.SetPrivileged(privileged)
	// pro-bing takes any echo reply with the socket's identifier and the probe's tracker, from
	// whoever sent it, and a datagram ping socket is not connected: the kernel hands it replies
	// from any host. Only the backend's own reply passes.
	var stranger atomic.Pointer[netip.Addr]
	pinger.OnRecv = func(p *probing.Packet) {
		if from, ok := netip.AddrFromSlice(p.IPAddr.IP); !ok || from.Unmap() != addr.WithZone("") {
			stranger.Store(&from)
		}
	}
	err := pinger.RunWithContext(ctx)
	if from := stranger.Load(); from != nil {
		return fmt.Errorf("icmp: %w", errStrangerReply{*from})
	}
	if err == nil && pinger.Statistics().PacketsRecv > 0 {
		return nil
	}
	// An unanswered echo ends one of two ways, whichever timer fires first: pro-bing's Timeout
	// returns nil (a timeout is not an error to it), the context's deadline returns
	// DeadlineExceeded. Both mean the same, so both read the same.
	if err == nil || errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("icmp: %w", errNoReply{timeout})
	}
	return fmt.Errorf("icmp: %w", pingFailure(err, privileged))
}

// pingFailure words what pro-bing returns as the socket gave it ("write udp
// 0.0.0.0:7->10.0.0.7:0: sendto: network is unreachable", "socket: permission denied") as the
// other checks do: what failed, and what to do about it when the host's settings are the cause.
// The errno stays wrapped, for Reason.
func pingFailure(err error, privileged bool) error {
	var sys *os.SyscallError
	var op *net.OpError
	switch {
	case errors.As(err, &sys) && sys.Syscall == "socket" && (errors.Is(err, syscall.EACCES) || errors.Is(err, syscall.EPERM)):
		if privileged {
			return fmt.Errorf("cannot open a raw ICMP socket (%w): privileged ping needs CAP_NET_RAW", sys.Err)
		}
		return fmt.Errorf("cannot open a ping socket (%w): unprivileged ping needs net.ipv4.ping_group_range to include the process's group (%d), or CAP_NET_RAW",
			sys.Err, os.Getegid())
	case errors.As(err, &op) && op.Op == "write":
		cause := op.Err
		if errors.As(cause, &sys) {
			cause = sys.Err
		}
		switch {
		case errors.Is(cause, syscall.ENETUNREACH):
			return fmt.Errorf("echo request not sent: %w (no route to the backend)", cause)
		case errors.Is(cause, syscall.EACCES), errors.Is(cause, syscall.EPERM):
			return fmt.Errorf("echo request not sent: %w (a firewall rule of this host refused it)", cause)
		}
		return fmt.Errorf("echo request not sent: %w", cause)
	}
	return err
}

// errStrangerReply is an echo reply that came from another address than the backend's.
type errStrangerReply struct{ from netip.Addr }

func (e errStrangerReply) Error() string {
	return "the echo reply came from " + e.from.String() + ", not from the backend"
}
