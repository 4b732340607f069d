package healthdns

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"maps"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/coredns/caddy"
	"github.com/coredns/coredns/core/dnsserver"

	"github.com/healthdns/healthdns/balance"
	"github.com/healthdns/healthdns/source"
)

// sourceKind says where a pool's live backend list comes from, besides its Corefile lines.
type sourceKind int

const (
	sourceNone sourceKind = iota
	sourceFile
	sourceEtcd
)

// sourceConfig is a pool's backends_file or backends_etcd.
type sourceConfig struct {
	kind sourceKind
	line int    // its Corefile line
	path string // backends_file
	etcd etcdConfig

	initial []backend // backends_file: the list read at setup
}

type etcdConfig struct {
	endpoints              []string
	prefix                 string
	user, password         string
	tlsCert, tlsKey, tlsCA string
}

// String names the source in logs, metrics and the status page: "file /etc/healthdns/app.lan"
// or "etcd /healthdns/app.lan/".
func (s sourceConfig) String() string {
	switch s.kind {
	case sourceFile:
		return "file " + s.path
	case sourceEtcd:
		return fmt.Sprintf("etcd %s %s", s.etcd.prefix, strings.Join(s.etcd.endpoints, ","))
	}
	return ""
}

func otherSource(prop string) string {
	if prop == "backends_file" {
		return "backends_etcd"
	}
	return "backends_file"
}

// parseBackendsFile reads 'backends_file PATH'; a relative path is the Corefile root's, as the
// hosts plugin's is.
func parseBackendsFile(c *caddy.Controller, args []string) (sourceConfig, error) {
	if len(args) != 1 {
		return sourceConfig{}, c.Errf("want 'backends_file PATH'")
	}
	path := args[0]
	if root := dnsserver.GetConfig(c).Root; !filepath.IsAbs(path) && root != "" {
		path = filepath.Join(root, path)
	}
	return sourceConfig{kind: sourceFile, line: c.Line(), path: path}, nil
}

const etcdForm = "'backends_etcd { endpoint URL...; prefix PATH; credentials USER PASSWORD; tls CERT KEY CACERT }'"

// parseBackendsEtcd reads 'backends_etcd [{ ... }]'. The block is read token by token: caddy's
// NextBlock does not nest, and this one sits inside the healthdns block.
func parseBackendsEtcd(c *caddy.Controller, args []string) (sourceConfig, error) {
	sc := sourceConfig{kind: sourceEtcd, line: c.Line()}
	// RemainingArgs stops before a '{' on the line and leaves it next.
	switch {
	case len(args) > 0:
		return sc, c.Errf("want %s", etcdForm)
	case c.NextArg():
		if c.Val() != "{" {
			return sc, c.Errf("want %s", etcdForm)
		}
		seen := map[string]int{}
		for {
			if !c.Next() {
				return sc, c.Errf("backends_etcd block opened on line %d is not closed; want %s", sc.line, etcdForm)
			}
			prop := c.Val()
			if prop == "}" {
				break
			}
			if prev, dup := seen[prop]; dup {
				return sc, c.Errf("duplicate '%s' in backends_etcd (first on line %d): give it once", prop, prev)
			}
			seen[prop] = c.Line()
			if err := parseEtcdProperty(c, &sc.etcd, prop, c.RemainingArgs()); err != nil {
				return sc, err
			}
		}
	}
	if len(sc.etcd.endpoints) == 0 {
		sc.etcd.endpoints = []string{"http://127.0.0.1:2379"}
	}
	return sc, nil
}

func parseEtcdProperty(c *caddy.Controller, ec *etcdConfig, prop string, args []string) error {
	switch prop {
	case "endpoint":
		if len(args) == 0 {
			return c.Errf("'endpoint' wants at least one URL, such as http://127.0.0.1:2379")
		}
		for _, a := range args {
			u, err := url.Parse(a)
			if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || (u.Path != "" && u.Path != "/") {
				return c.Errf("invalid etcd endpoint '%s': want an http:// or https:// URL of host and port, such as http://10.0.0.5:2379", a)
			}
		}
		ec.endpoints = args
	case "prefix":
		if len(args) != 1 || !strings.HasPrefix(args[0], "/") {
			return c.Errf("want 'prefix PATH', a key prefix that starts with /, such as /healthdns/app.lan/")
		}
		ec.prefix = args[0]
		if !strings.HasSuffix(ec.prefix, "/") {
			ec.prefix += "/"
		}
	case "credentials":
		if len(args) != 2 {
			return c.Errf("want 'credentials USER PASSWORD'")
		}
		ec.user, ec.password = args[0], args[1]
	case "tls":
		if len(args) != 3 {
			return c.Errf("want 'tls CERT KEY CACERT'")
		}
		ec.tlsCert, ec.tlsKey, ec.tlsCA = args[0], args[1], args[2]
		if _, err := ec.tlsConfig(); err != nil {
			return c.Errf("backends_etcd tls: %v", err)
		}
	default:
		return c.Errf("unknown backends_etcd property '%s'; want endpoint, prefix, credentials or tls", prop)
	}
	return nil
}

// tlsConfig loads the client certificate and the CA that etcd's certificate must chain to;
// nil without 'tls'.
func (ec etcdConfig) tlsConfig() (*tls.Config, error) {
	if ec.tlsCert == "" {
		return nil, nil
	}
	cert, err := tls.LoadX509KeyPair(ec.tlsCert, ec.tlsKey)
	if err != nil {
		return nil, fmt.Errorf("client certificate %s, key %s: %w", ec.tlsCert, ec.tlsKey, err)
	}
	pem, err := os.ReadFile(ec.tlsCA)
	if err != nil {
		return nil, fmt.Errorf("CA certificate: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("CA certificate %s: no PEM certificate in it", ec.tlsCA)
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: pool, MinVersion: tls.VersionTLS12}, nil
}

// readBackendsFile reads and parses a backends file, against the pool's Corefile backends.
func readBackendsFile(path string, static []backend) ([]backend, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return parseBackendsFileData(path, data, static)
}

// parseBackendsFileData parses a backends file: one backend a line, the words of a Corefile
// backend line after 'backend', with '#' comments and blank lines. Errors name the file and line.
func parseBackendsFileData(path string, data []byte, static []backend) ([]backend, error) {
	var list []backend
	seen := map[netip.Addr]string{}
	for _, b := range static {
		seen[b.addr] = "the Corefile"
	}
	for i, line := range strings.Split(string(data), "\n") {
		if hash := strings.IndexByte(line, '#'); hash >= 0 {
			line = line[:hash]
		}
		words := strings.Fields(line)
		if len(words) == 0 {
			continue
		}
		where := fmt.Sprintf("%s:%d", path, i+1)
		b, err := parseBackendWords(words)
		if err != nil {
			return nil, fmt.Errorf("%s: %v", where, err)
		}
		if prev, dup := seen[b.addr]; dup {
			return nil, fmt.Errorf("%s: backend %s listed twice (first in %s)", where, b.addr, prev)
		}
		seen[b.addr] = fmt.Sprintf("line %d", i+1)
		list = append(list, b)
	}
	if n := len(static) + len(list); n > balance.MaxSetSize {
		return nil, fmt.Errorf("%s: %d backends with the Corefile's; at most %d fit in one zone", path, n, balance.MaxSetSize)
	}
	return list, nil
}

// parseEtcdBackends parses the backends of an etcd prefix: a key per backend, its address
// under the prefix, its value the rest of a backend line. Each key is a backend of its own,
// written on its own: a key that does not parse, or names a backend listed already, is
// skipped (and returned, by its full key, with its error) and the others make the list. Only
// a list too long for a zone fails as a whole.
func parseEtcdBackends(prefix string, kvs map[string]string, static []backend) ([]backend, []skippedKey, error) {
	keys := slices.Sorted(maps.Keys(kvs))
	seen := map[netip.Addr]string{}
	for _, b := range static {
		seen[b.addr] = "the Corefile"
	}
	var list []backend
	var skipped []skippedKey
	for _, k := range keys {
		b, err := parseBackendWords(append([]string{k}, strings.Fields(kvs[k])...))
		if err == nil {
			if prev, dup := seen[b.addr]; dup {
				err = fmt.Errorf("backend %s listed twice (also %s)", b.addr, prev)
			}
		}
		if err != nil {
			skipped = append(skipped, skippedKey{key: prefix + k, err: err.Error()})
			continue
		}
		seen[b.addr] = "key " + prefix + k
		list = append(list, b)
	}
	if n := len(static) + len(list); n > balance.MaxSetSize {
		return nil, nil, fmt.Errorf("etcd prefix %s: %d backends with the Corefile's; at most %d fit in one zone", prefix, n, balance.MaxSetSize)
	}
	return list, skipped, nil
}

// skippedKey is an etcd key left out of the list, and why.
type skippedKey struct {
	key, err string
}

// skipped records the keys the last list from etcd left out: each newly skipped key (or one
// skipped for a new reason) is logged and counted once, and each that no longer is, logged.
//
//	zone app.lan.: backends_etcd: etcd key /healthdns/app.lan/web3: invalid address 'web3': want an IPv4 or IPv6 literal; skipped, the prefix's other keys apply
func (p *Pool) skipped(keys []skippedKey) {
	now := time.Now()
	p.mu.Lock()
	was := p.src.skipped
	p.src.skipped = make(map[string]string, len(keys))
	var fresh []skippedKey
	for _, k := range keys {
		p.src.skipped[k.key] = k.err
		if was[k.key] != k.err {
			fresh = append(fresh, k)
			p.src.lastError, p.src.lastErrorAt = "etcd key "+k.key+": "+k.err, now
			p.src.errors++
		}
	}
	var cleared []string
	for key := range was {
		if _, still := p.src.skipped[key]; !still {
			cleared = append(cleared, key)
		}
	}
	p.mu.Unlock()
	labels := []string{p.cfg.server, p.cfg.zone, p.cfg.source.label()}
	sourceSkippedKeys.WithLabelValues(labels...).Set(float64(len(keys)))
	for _, k := range fresh {
		sourceErrorsTotal.WithLabelValues(labels...).Inc()
		log.Errorf("zone %s: %s: etcd key %s: %s; skipped, the prefix's other keys apply", p.cfg.zone, p.cfg.source.directive(), k.key, k.err)
	}
	slices.Sort(cleared)
	for _, key := range cleared {
		log.Infof("zone %s: %s: etcd key %s no longer skipped (deleted or fixed)", p.cfg.zone, p.cfg.source.directive(), key)
	}
}

// directive is the source's Corefile property, which names it in errors.
func (s sourceConfig) directive() string {
	if s.kind == sourceFile {
		return "backends_file"
	}
	return "backends_etcd"
}

// label is the source label of the pool's source metrics: bounded, one per kind.
func (s sourceConfig) label() string {
	switch s.kind {
	case sourceFile:
		return "file"
	case sourceEtcd:
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
	skipped     map[string]string // etcd: the keys the last list left out, and why
	revision    int64             // etcd: the revision of the last list applied
	applied     chan struct{}     // etcd: closed when a list is applied, for awaitList; nil when none waits
}

// startSource starts watching the pool's source; stopSource ends it. The watch delivers whole
// lists to setSourceList; a list that does not load keeps the last good one.
func (p *Pool) startSource() {
	src := p.cfg.source
	if src.kind == sourceNone {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	p.srcCancel, p.srcDone = cancel, done
	switch src.kind {
	case sourceFile:
		p.recordLoad() // the list read at setup, which start applied
		f := source.NewFile(src.path, 0)
		go func() {
			defer close(done)
			f.Run(ctx, func(data []byte, err error) {
				if err == nil {
					var list []backend
					if list, err = parseBackendsFileData(src.path, data, p.cfg.backends); err == nil {
						p.loaded(list)
						return
					}
				}
				p.sourceFailed(err)
			})
		}()
	case sourceEtcd:
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
func (p *Pool) loaded(list []backend) {
	p.recordLoad()
	p.setSourceList(list)
}

// recordLoad notes the time of a good load, for the status page and the metric.
func (p *Pool) recordLoad() {
	now := time.Now()
	p.mu.Lock()
	p.src.lastLoad = now
	p.mu.Unlock()
	sourceLastLoad.WithLabelValues(p.cfg.server, p.cfg.zone, p.cfg.source.label()).Set(float64(now.UnixNano()) / 1e9)
}

// sourceFailed logs and counts a list that did not load; the last good list keeps serving.
//
//	zone app.lan.: backends_file: /etc/healthdns/app.lan:7: invalid address '10.0.0.x': want an IPv4 or IPv6 literal; keeping the last good list (3 from it)
func (p *Pool) sourceFailed(err error) {
	p.mu.Lock()
	p.src.lastError, p.src.lastErrorAt = err.Error(), time.Now()
	p.src.errors++
	kept, awaiting := len(p.fromSrc), p.awaiting
	if awaiting {
		p.heardLocked() // startup waits no longer: the pool answers as all down until a list comes
	}
	p.mu.Unlock()
	sourceErrorsTotal.WithLabelValues(p.cfg.server, p.cfg.zone, p.cfg.source.label()).Inc()
	sourceLastError.WithLabelValues(p.cfg.server, p.cfg.zone, p.cfg.source.label()).Set(float64(time.Now().UnixNano()) / 1e9)
	if awaiting {
		log.Errorf("zone %s: %s: %v; no list from it yet", p.cfg.zone, p.cfg.source.directive(), err)
		return
	}
	log.Errorf("zone %s: %s: %v; keeping the last good list (%d from it)", p.cfg.zone, p.cfg.source.directive(), err, kept)
}

// predecessorList returns the etcd list of the pool this one replaces in a reload (the same
// server, zone and source, kept in the registry by its start), and whether it had loaded one:
// the new pool starts from it, ready, instead of answering as all down until etcd answers it.
func (p *Pool) predecessorList() ([]backend, bool) {
	if p.cfg.source.kind != sourceEtcd {
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
	return fmt.Sprintf("source %s %s %s", p.cfg.server, p.cfg.zone, p.cfg.source)
}
