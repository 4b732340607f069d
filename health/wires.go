package health

import (
	"github.com/healthdns/healthdns/health/internal/engine"
	"github.com/healthdns/healthdns/health/internal/rawsock"
	"github.com/healthdns/healthdns/health/internal/wire"
)

// loops are a registry's loops, one per wire, made at first use and kept for the registry's
// life: unused, a loop holds no socket and no goroutine. One loop per wire means one raw socket
// per family for every privileged ping of the process, however many server blocks or reloads
// ask (each raw ICMP socket receives every echo reply of the host), and one for every TCP check.
type loops struct {
	echo     *engine.Loop[wire.EchoState]
	tcp      engine.Scheduler // half-open or connect, on Linux
	blocking *engine.Loop[wire.BlockingState]

	icmpDecided    bool
	icmpPrivileged bool
}

// wireLocked returns the loop that probes t's check, and what to give it.
func (r *Registry) wireLocked(t Target) (engine.Scheduler, engine.Target) {
	c := t.Spec.Check
	probe := engine.Target{
		Addr:     t.Addr,
		Port:     c.Port,
		Interval: t.Spec.Interval,
		Timeout:  t.Spec.Timeout,
		Budget:   r.retries,
		Name:     c.String(),
	}
	switch {
	case r.probe != nil:
		probe.Run = r.probe
	case c.Kind == ICMP:
		privileged := r.icmpPrivilegedLocked()
		if privileged && rawsock.BatchedICMP {
			if r.echo == nil {
				r.echo = engine.New[wire.EchoState](wire.NewEcho())
			}
			return r.echo, probe
		}
		probe.Run = wire.Ping(privileged)
	case c.Kind == TCP:
		if loop := r.tcpLoopLocked(); loop != nil {
			return loop, probe
		}
		probe.Run = wire.Dial(c.Port)
	}
	return r.blockingLocked(), probe
}

func (r *Registry) blockingLocked() engine.Scheduler {
	if r.blocking == nil {
		r.blocking = engine.New[wire.BlockingState](wire.NewBlocking())
	}
	return r.blocking
}

// icmpPrivilegedLocked is ICMPMode's answer, asked once. Setup asks ICMPMode itself, so that a
// host where neither mode works fails at startup: here that case pings unprivileged, and each
// probe fails with the socket's error.
func (r *Registry) icmpPrivilegedLocked() bool {
	if !r.icmpDecided {
		r.icmpPrivileged, _ = ICMPMode()
		r.icmpDecided = true
	}
	return r.icmpPrivileged
}
