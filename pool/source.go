package pool

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/healthdns/healthdns/event"
	"github.com/healthdns/healthdns/source"
)

// SourceKind says where a pool's live backend list comes from, besides its Corefile lines.
type SourceKind int

const (
	SourceNone SourceKind = iota
	SourceFile
	SourceEtcd
)

// Source is a pool's backends_file or backends_etcd.
type Source struct {
	Kind SourceKind
	Line int    // its Corefile line
	Path string // backends_file
	Etcd EtcdSource

	Initial     []Backend // backends_file: the list read at setup
	initialData []byte    // and the contents it was read from (ReadFile), which the watch holds
}

type EtcdSource struct {
	Endpoints              []string
	Prefix                 string
	User, Password         string
	TLSCert, TLSKey, TLSCA string
}

// String names the source in logs, metrics and the status page: "file /etc/healthdns/app.lan"
// or "etcd /healthdns/app.lan/".
func (s Source) String() string {
	switch s.Kind {
	case SourceFile:
		return "file " + s.Path
	case SourceEtcd:
		return fmt.Sprintf("etcd %s %s", s.Etcd.Prefix, strings.Join(s.Etcd.Endpoints, ","))
	}
	return ""
}

// tlsConfig loads the client certificate and the CA that etcd's certificate must chain to;
// nil without 'tls'.
func (ec EtcdSource) TLSConfig() (*tls.Config, error) {
	if ec.TLSCert == "" {
		return nil, nil
	}
	cert, err := tls.LoadX509KeyPair(ec.TLSCert, ec.TLSKey)
	if err != nil {
		return nil, fmt.Errorf("client certificate %s, key %s: %w", ec.TLSCert, ec.TLSKey, err)
	}
	pem, err := os.ReadFile(ec.TLSCA)
	if err != nil {
		return nil, fmt.Errorf("CA certificate: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("CA certificate %s: no PEM certificate in it", ec.TLSCA)
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: pool, MinVersion: tls.VersionTLS12}, nil
}

// Directive is the source's Corefile property, which names it in errors.
func (s Source) Directive() string {
	if s.Kind == SourceFile {
		return "backends_file"
	}
	return "backends_etcd"
}

// Label is the source label of the pool's source metrics: bounded, one per kind.
func (s Source) Label() string {
	switch s.Kind {
	case SourceFile:
		return "file"
	case SourceEtcd:
		return "etcd"
	}
	return ""
}

// sourceState is what the status page shows of a pool's source. Guarded by Pool.mu.
type sourceState struct {
	lastLoad    time.Time
	lastError   string
	lastErrorAt time.Time
	connected   bool
	errors      int
	failing     bool              // a load failed, or etcd was lost, and no list has loaded since
	skipped     map[string]string // etcd: the keys the last list left out, and why
	revision    int64             // etcd: the revision of the last list applied
	applied     chan struct{}     // etcd: closed when a list is applied, for awaitList; nil when none waits
}

// startSource starts watching the pool's source; stopSource ends it. The watch delivers whole
// lists to setSourceList; a list that does not load keeps the last good one.
func (p *Pool) startSource() {
	src := p.cfg.Source
	if src.Kind == SourceNone {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	p.srcCancel, p.srcDone = cancel, done
	switch src.Kind {
	case SourceFile:
		p.recordLoad() // the list read at setup, which start applied
		f := source.NewFile(src.Path, 0)
		if src.initialData != nil {
			f.Holding(src.initialData)
		}
		go func() {
			defer close(done)
			f.Run(ctx, func(data []byte, err error) {
				if err == nil {
					var list []Backend
					if list, err = parseBackendsFileData(src.Path, data, p.cfg.Backends); err == nil {
						p.loaded(list)
						return
					}
				}
				p.sourceFailed(err)
			})
		}()
	case SourceEtcd:
		go func() {
			defer close(done)
			p.runEtcd(ctx)
		}()
	}
}

func (p *Pool) stopSource() {
	if p.srcCancel != nil {
		p.srcCancel()
		<-p.srcDone
		p.agreeWG.Wait() // proposals use the source's context: they end with it
	}
}

// loaded applies a good list from the source.
func (p *Pool) loaded(list []Backend) {
	p.recordLoad()
	p.setSourceList(list)
}

// recordLoad notes the time of a good load, for the status page and the metric.
func (p *Pool) recordLoad() {
	now := time.Now()
	p.mu.Lock()
	p.src.lastLoad = now
	if p.src.failing {
		p.src.failing = false
		p.publish(event.Event{Kind: event.SourceRecovered, Source: p.cfg.Source.Label()})
	}
	p.mu.Unlock()
	p.metrics.SourceLastLoad.WithLabelValues(p.cfg.Server, p.cfg.Zone, p.cfg.Source.Label()).Set(float64(now.UnixNano()) / 1e9)
}

// sourceFailed logs and counts a list that did not load; the last good list keeps serving.
//
//	zone app.lan.: backends_file: /etc/healthdns/app.lan:7: invalid address '10.0.0.x': want an IPv4 or IPv6 literal; keeping the last good list (3 from it)
func (p *Pool) sourceFailed(err error) {
	p.mu.Lock()
	p.src.lastError, p.src.lastErrorAt = err.Error(), time.Now()
	p.src.errors++
	if !p.src.failing {
		p.src.failing = true
		p.publish(event.Event{Kind: event.SourceFailed, Source: p.cfg.Source.Label(), Error: err.Error()})
	}
	kept, awaiting := len(p.fromSrc), p.awaiting
	if awaiting {
		p.heardLocked() // startup waits no longer: the pool answers as all down until a list comes
	}
	p.mu.Unlock()
	p.metrics.SourceErrorsTotal.WithLabelValues(p.cfg.Server, p.cfg.Zone, p.cfg.Source.Label()).Inc()
	p.metrics.SourceLastError.WithLabelValues(p.cfg.Server, p.cfg.Zone, p.cfg.Source.Label()).Set(float64(time.Now().UnixNano()) / 1e9)
	if awaiting {
		log.Errorf("zone %s: %s: %v; no list from it yet", p.cfg.Zone, p.cfg.Source.Directive(), err)
		return
	}
	log.Errorf("zone %s: %s: %v; keeping the last good list (%d from it)", p.cfg.Zone, p.cfg.Source.Directive(), err, kept)
}

// predecessorList returns the etcd list of the pool this one replaces in a reload (the same
// server, zone and source, kept in the registry by its start), and whether it had loaded one:
// the new pool starts from it, ready, instead of answering as all down until etcd answers it.
func (p *Pool) predecessorList() ([]Backend, bool) {
	if p.cfg.Source.Kind != SourceEtcd {
		return nil, false
	}
	v, ok := p.reg.Kept(p.listKey())
	if !ok {
		return nil, false
	}
	prev := v.(*Pool)
	prev.mu.Lock()
	defer prev.mu.Unlock()
	return prev.fromSrc, !prev.awaiting
}

func (p *Pool) listKey() string {
	return fmt.Sprintf("source %s %s %s", p.cfg.Server, p.cfg.Zone, p.cfg.Source)
}

// runEtcd follows the pool's etcd prefix until ctx ends: a get, then a watch from the next
// revision, resynchronised after a compaction or an outage (source.Etcd).
func (p *Pool) runEtcd(ctx context.Context) {
	ec := p.cfg.Source.Etcd
	tlsConf, err := ec.TLSConfig() // read at setup already; the files may have gone since
	if err == nil {
		var e *source.Etcd
		e, err = source.NewEtcd(source.EtcdConfig{Endpoints: ec.Endpoints, Prefix: ec.Prefix, Username: ec.User, Password: ec.Password, TLS: tlsConf})
		if err == nil {
			defer e.Close()
			p.mu.Lock()
			p.agree.Etcd, p.agree.ctx = e, ctx
			p.mu.Unlock()
			e.Run(ctx, func(l source.List) {
				if l.Err != nil { // no list: the last one serves, and no write is seen applied
					p.sourceFailed(l.Err)
					return
				}
				badDrains := p.fleetDrains(l.State) // before the list's rebuild, which applies them
				list, skipped, err := parseEtcdBackends(ec.Prefix, l.Backends, p.cfg.Backends)
				if err != nil {
					p.sourceFailed(err)
				} else {
					p.skipped(append(append(skipped, oversizedKeys(ec.Prefix, l.Oversized)...), badDrains...))
					p.loaded(list)
				}
				p.agreed(l.State, l.Revision) // the fleet's groups hold whatever the backends' keys say
				p.listApplied(l.Revision)
			}, p.connected)
			p.mu.Lock()
			p.agree.Etcd = nil
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
	p.metrics.SourceConnected.WithLabelValues(p.cfg.Server, p.cfg.Zone, p.cfg.Source.Label()).Set(gauge)
	switch {
	case !up && err != nil:
		// The lists after an outage are etcd's word, whatever this server wrote before it (an
		// etcd restored or rebuilt starts its revisions again).
		p.mu.Lock()
		for fam := range p.agree.fam {
			p.agree.fam[fam].wroteRev = 0
		}
		p.mu.Unlock()
		// What etcd refused, when it did: a refused login or certificate ends a connection as
		// an outage does, and wants another fix.
		what := "cannot follow etcd, retrying until it answers"
		if refusal := source.Refusal(err); refusal != "" {
			what = refusal + ", retrying"
		}
		p.sourceFailed(fmt.Errorf("%s: %w", what, err))
		if p.agreeing() && was {
			log.Warningf("zone %s: cut off from etcd: the last agreed priority groups serve while they have a healthy backend; no switch is agreed with the fleet until etcd returns", p.cfg.Zone)
		}
	case up && !was:
		log.Infof("zone %s: backends_etcd: connected to %s, reading %s", p.cfg.Zone, strings.Join(p.cfg.Source.Etcd.Endpoints, ", "), p.cfg.Source.Etcd.Prefix)
	}
}
