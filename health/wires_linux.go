package health

import (
	"github.com/healthdns/healthdns/health/internal/engine"
	"github.com/healthdns/healthdns/health/internal/rawsock"
	"github.com/healthdns/healthdns/health/internal/wire"
)

// tcpLoopLocked returns the loop every TCP check of the registry shares, whatever its port: it
// sends SYNs from a raw socket where the process may (half-open), and connects otherwise.
func (r *Registry) tcpLoopLocked() engine.Scheduler {
	if r.tcp == nil {
		if !r.connectOnly && rawsock.TCPAllowed() {
			r.tcp, r.tcpWire = engine.New[wire.HalfOpenState](wire.NewHalfOpen()), "tcp_syn"
		} else {
			r.tcp, r.tcpWire = engine.New[wire.ConnectState](wire.NewConnect()), "tcp_connect"
		}
	}
	return r.tcp
}
