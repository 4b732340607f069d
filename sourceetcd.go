package healthdns

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"

	"github.com/healthdns/healthdns/source"
)

// runEtcd follows the pool's etcd prefix until ctx ends: a get, then a watch from the next
// revision, resynchronised after a compaction or an outage (source.Etcd).
func (p *Pool) runEtcd(ctx context.Context) {
	ec := p.cfg.source.etcd
	tlsConf, err := ec.tlsConfig() // read at setup already; the files may have gone since
	if err == nil {
		var e *source.Etcd
		e, err = source.NewEtcd(source.EtcdConfig{Endpoints: ec.endpoints, Prefix: ec.prefix, Username: ec.user, Password: ec.password, TLS: tlsConf})
		if err == nil {
			defer e.Close()
			p.mu.Lock()
			p.agree.etcd, p.agree.ctx = e, ctx
			p.mu.Unlock()
			e.Run(ctx, func(l source.List) {
				badDrains := p.fleetDrains(l.State) // before the list's rebuild, which applies them
				list, skipped, err := parseEtcdBackends(ec.prefix, l.Backends, p.cfg.backends)
				if err != nil {
					p.sourceFailed(err)
				} else {
					p.skipped(append(skipped, badDrains...))
					p.loaded(list)
				}
				p.agreed(l.State) // the fleet's groups hold whatever the backends' keys say
				p.listApplied(l.Revision)
			}, p.connected)
			p.mu.Lock()
			p.agree.etcd = nil
			p.mu.Unlock()
			return
		}
	}
	p.sourceFailed(err)
}

// connected records whether etcd is reachable. An outage is logged and counted once; the last
// good list keeps serving through it.
func (p *Pool) connected(up bool, err error) {
	p.mu.Lock()
	was := p.src.connected
	p.src.connected = up
	p.mu.Unlock()
	gauge := 0.0
	if up {
		gauge = 1
	}
	sourceConnected.WithLabelValues(p.cfg.server, p.cfg.zone, p.cfg.source.label()).Set(gauge)
	switch {
	case !up && err != nil:
		// What etcd refused, when it did: a refused login or certificate ends a connection as
		// an outage does, and wants another fix.
		what := "cannot follow etcd, retrying until it answers"
		if refusal := etcdRefusal(err); refusal != "" {
			what = refusal + ", retrying"
		}
		p.sourceFailed(fmt.Errorf("%s: %w", what, err))
		if p.agreeing() && was {
			log.Warningf("zone %s: cut off from etcd: the last agreed priority groups serve while they have a healthy backend; no switch is agreed with the fleet until etcd returns", p.cfg.zone)
		}
	case up && !was:
		log.Infof("zone %s: backends_etcd: connected to %s, reading %s", p.cfg.zone, strings.Join(p.cfg.source.etcd.endpoints, ", "), p.cfg.source.etcd.prefix)
	}
}

// etcdRefusal says what the operator must fix when etcd is there but does not let the server
// in: its TLS handshake fails, or etcd refuses its credentials; "" for any other error. Waiting
// for etcd to return would be the wrong advice then.
func etcdRefusal(err error) string {
	var tlsErr *source.TLSError
	switch {
	case errors.As(err, &tlsErr):
		return "the TLS handshake with etcd fails (see 'tls' and etcd's certificates)"
	case errors.Is(err, rpctypes.ErrAuthFailed):
		return "etcd refuses the user and password of 'credentials'"
	case errors.Is(err, rpctypes.ErrUserEmpty):
		return "etcd has authentication on and wants 'credentials USER PASSWORD'"
	case errors.Is(err, rpctypes.ErrPermissionDenied):
		return "etcd denies the user of 'credentials' a read of the prefix"
	}
	return ""
}
