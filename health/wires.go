package health

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/netip"
	"os"

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
	tcpWire  string           // its name for LoopStatus
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
		Fast:     t.Spec.Fast,
		Timeout:  t.Spec.Timeout,
		Budget:   r.retries,
		Name:     c.String(),
	}
	switch {
	case c.Kind == Push: // nothing to probe, whatever WithProbe says: the backend reports
		return pushes{}, probe
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
	case c.Kind == HTTP || c.Kind == HTTPS:
		probe.Run = httpCheck(c)
	case c.Kind == Exec:
		probe.Run = wire.Exec(wire.ExecSpec{Path: c.Command, Args: c.ExecArgs()})
		probe.Turns = r.scripts // one try, which waits for its turn
	}
	return r.blockingLocked(), probe
}

func (r *Registry) blockingLocked() engine.Scheduler {
	if r.blocking == nil {
		r.blocking = engine.New[wire.BlockingState](wire.NewBlocking())
	}
	return r.blocking
}

// httpCheck is c's HTTP or HTTPS check; a check whose settings Validate refuses fails every
// probe with the reason.
func httpCheck(c Check) func(ctx context.Context, addr netip.Addr) error {
	spec, err := httpSpec(c)
	if err != nil {
		name := c.String()
		return func(context.Context, netip.Addr) error { return fmt.Errorf("%s: %w", name, err) }
	}
	return wire.HTTP(spec)
}

func httpSpec(c Check) (wire.HTTPSpec, error) {
	spec := wire.HTTPSpec{Port: c.Port, Path: c.Path, Host: c.Host, Body: c.Body, BodyExact: c.BodyExact}
	if c.Expect != "" {
		codes, err := wire.ParseStatusCodes(c.Expect)
		if err != nil {
			return spec, err
		}
		spec.Expect = codes
	}
	if c.Kind == HTTPS {
		spec.TLS = &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: c.TLSInsecure}
		if c.TLSCA != "" {
			pem, err := os.ReadFile(c.TLSCA)
			if err != nil {
				return spec, fmt.Errorf("tls_ca: %w", err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return spec, fmt.Errorf("tls_ca %s: no PEM certificate in it", c.TLSCA)
			}
			spec.TLS.RootCAs = pool
		}
	}
	return spec, nil
}

// Reason classifies a probe's failure in a few words, for a metric's label: refused, timeout,
// unreachable, http_status, http_body, tls, exec_exit, push_fail, push_missed or error. The error's text says
// more.
func Reason(err error) string {
	var pushed *PushError
	if errors.As(err, &pushed) {
		if pushed.Missed {
			return ReasonPushMissed
		}
		return ReasonPushFail
	}
	return wire.Reason(err)
}

// CheckStatusCodes reports whether s is a set of HTTP statuses an http check can expect:
// "200", "200-299" or "200,204,301-302".
func CheckStatusCodes(s string) error {
	_, err := wire.ParseStatusCodes(s)
	return err
}

// Validate reports what would keep c from running here: an unreadable tls_ca, a script that is
// missing, not executable, or (running as root) writable by someone else. Setup calls it, so
// that such a check fails startup with its line rather than failing every probe.
func (c Check) Validate() error {
	switch c.Kind {
	case HTTP, HTTPS:
		_, err := httpSpec(c)
		return err
	case Exec:
		fi, err := os.Stat(c.Command)
		switch {
		case err != nil:
			return err
		case fi.IsDir() || !wire.Executable(fi):
			return fmt.Errorf("%s is not an executable file", c.Command)
		}
		if err := wire.ScriptSafe(c.Command); err != nil {
			return errors.New("refused: " + err.Error())
		}
	}
	return nil
}

// icmpPrivilegedLocked is ICMPMode's answer, asked once. Setup asks ICMPMode itself, so that a
// host where neither mode works fails at startup: here that case pings unprivileged, and each
// probe fails with the socket's error.
func (r *Registry) icmpPrivilegedLocked() bool {
	if !r.icmpDecided {
		c := detectICMP()
		r.icmpPrivileged, r.icmpDecided = c.privileged, true
		r.notice(c.notice(rawsock.BatchedICMP, pingGroupRange))
	}
	return r.icmpPrivileged
}
