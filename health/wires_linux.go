package health

import (
	"fmt"

	"github.com/healthdns/healthdns/health/internal/engine"
	"github.com/healthdns/healthdns/health/internal/rawsock"
	"github.com/healthdns/healthdns/health/internal/wire"
)

// tcpLoopLocked returns the loop every TCP check of the registry shares, whatever its port: it
// sends SYNs from a raw socket where the process may (half-open), and connects otherwise.
func (r *Registry) tcpLoopLocked() engine.Scheduler {
	if r.tcp != nil {
		return r.tcp
	}
	switch raw := rawsock.RawTCP(); {
	case r.connectOnly:
		r.tcp, r.tcpWire = engine.New[wire.ConnectState](wire.NewConnect()), "tcp_connect"
		r.notice("tcp checks: connects, closed with a reset (half-open probing is turned off)")
	case raw == nil:
		r.tcp, r.tcpWire = engine.New[wire.HalfOpenState](wire.NewHalfOpen()), "tcp_syn"
		r.notice("tcp checks: half-open, SYNs from a raw socket (CAP_NET_RAW)")
	default:
		r.tcp, r.tcpWire = engine.New[wire.ConnectState](wire.NewConnect()), "tcp_connect"
		r.notice(fmt.Sprintf("tcp checks: connects, closed with a reset, not half-open: no %v (half-open checks need CAP_NET_RAW)", raw))
	}
	return r.tcp
}
