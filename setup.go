package healthdns

import (
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/coredns/caddy"
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/plugin"
	"github.com/coredns/coredns/plugin/pkg/dnsutil"
	"github.com/coredns/coredns/plugin/pkg/fall"
	clog "github.com/coredns/coredns/plugin/pkg/log"
	"github.com/miekg/dns"

	"github.com/healthdns/healthdns/balance"
	"github.com/healthdns/healthdns/health"
)

const pluginName = "healthdns"

var log = clog.NewWithPlugin(pluginName)

// process is what outlives a plugin instance, the one piece of package-level state besides
// CoreDNS's registrations: a Corefile reload builds a new instance, which adopts the running
// probe loops (targets) and status listeners of the one it replaces.
type process struct {
	targets *health.Registry
	status  *statusListeners
	started time.Time // for the status page's uptime
}

var proc = &process{
	targets: health.NewRegistry(observer{}),
	status:  newStatusListeners(),
	started: time.Now(),
}

func init() { plugin.Register(pluginName, setup) }

// Defaults, as documented in README.md.
const (
	defaultInterval = time.Second
	defaultTimeout  = 500 * time.Millisecond
	defaultRise     = 2
	defaultFall     = 2
	defaultAnswers  = 1
	defaultTTL      = 5
	maxWeight       = 1000
	// Each script is a process or more: beyond a thousand at once a host is forking, not
	// checking.
	maxExecConcurrency = 1000
	maxTTL             = 86400

	// Floors below which probing costs more than it tells: an interval of microseconds makes
	// hundreds of probes a second per backend, and a timeout under a millisecond is shorter than
	// the probers' own resolution.
	minInterval = 10 * time.Millisecond
	minTimeout  = time.Millisecond
)

type allDownMode uint8

const (
	allDownServeAll allDownMode = iota
	allDownServfail
	allDownFallthrough
)

func (m allDownMode) String() string {
	return [...]string{"serve_all", "servfail", "fallthrough"}[m]
}

type backend struct {
	addr     netip.Addr
	weight   uint32
	priority uint8 // higher is preferred, as VRRP's
	drain    drain
}

// drain takes a backend out of the answers, whatever its health, while it keeps being probed:
// an operator's maintenance window.
type drain struct {
	on     bool
	until  time.Time // zero: until the configuration changes
	reason string
}

// at reports whether the drain holds at now.
func (d drain) at(now time.Time) bool {
	return d.on && (d.until.IsZero() || now.Before(d.until))
}

// poolConfig is one zone's parsed configuration.
type poolConfig struct {
	zone     string // lower case, fully qualified
	backends []backend
	spec     health.Spec    // timing: interval, fast interval, timeout, rise, fall
	checks   []health.Check // a backend is up while every one passes
	policy   string
	answers  int
	ttl      uint32
	allDown  allDownMode
	nsName   string       // lower case, fully qualified
	nsAddrs  []netip.Addr // nil: the server's own addresses
	fall     fall.F
	server   string       // set by setup: the server label of CoreDNS's metrics, for ours
	status   statusConfig // the status listener this pool shows on; addr "" for none
	source   sourceConfig // backends_file or backends_etcd, kind sourceNone for neither

	preempt    balance.Preemption // how a higher priority group takes back from a lower one
	hashPrefix [2]int             // consistent_hash: the client address bits of the key, IPv4 and IPv6

	icmpLine int // the ICMP check's line, or the healthdns line for the default: where setup reports it

	// exec_concurrency: how many scripts the process runs at once, 0 when the block does not
	// say, and its line. It is the process's, not the pool's: see lifecycle.setExecConcurrency.
	execConcurrency     int
	execConcurrencyLine int
}

func setup(c *caddy.Controller) error { return setupWith(c, health.ICMPMode) }

// setupWith is setup with the detection of ICMP's socket mode given, a seam for tests of a
// machine where ICMP cannot work.
func setupWith(c *caddy.Controller, detectICMP func() (privileged bool, err error)) error {
	cfgs, err := parse(c)
	if err != nil {
		return plugin.Error(pluginName, err)
	}
	var icmpErr error
	icmpChecked := false
	serverAddrs := serverAddrs(dnsserver.GetConfig(c).ListenHosts)
	server := serverLabel(dnsserver.GetConfig(c))
	h := &HealthDNS{pools: map[string]*Pool{}}
	for _, cfg := range cfgs {
		// ICMP's socket mode is found out here, at setup, so that a machine where ICMP cannot
		// work fails at startup with the fix, at the pool's own line, rather than marking every
		// backend down.
		if cfg.icmpLine != 0 {
			if !icmpChecked {
				_, icmpErr = detectICMP()
				icmpChecked = true
			}
			if icmpErr != nil {
				return plugin.Error(pluginName, errAt(c, cfg.icmpLine, "zone %s: %v", cfg.zone, icmpErr))
			}
		}
		if cfg.nsAddrs == nil {
			cfg.nsAddrs = serverAddrs
		}
		cfg.server = server
		policy, _ := balance.New(cfg.policy) // parse validated the name
		h.pools[cfg.zone] = newPool(cfg, policy, proc.targets)
	}

	// Nothing starts here: the instance's one OnStartup starts every block's pools together,
	// and opens their status listeners.
	lc := lifecycleOf(c, proc)
	for _, cfg := range cfgs {
		if err := lc.setExecConcurrency(c, cfg); err != nil {
			return plugin.Error(pluginName, err)
		}
	}
	lc.add(h)
	for _, cfg := range cfgs {
		if cfg.status.addr != "" {
			if err := lc.addStatus(cfg.status, h.pools[cfg.zone]); err != nil {
				return plugin.Error(pluginName, err)
			}
		}
	}

	dnsserver.GetConfig(c).AddPlugin(func(next plugin.Handler) plugin.Handler {
		h.Next = next
		return h
	})
	return nil
}

// parse reads every healthdns block of a server block: one poolConfig per zone.
func parse(c *caddy.Controller) ([]poolConfig, error) {
	var cfgs []poolConfig
	seen := map[string]bool{}
	for c.Next() {
		line := c.Line()
		zones, err := parseZones(c, line, c.RemainingArgs())
		if err != nil {
			return nil, err
		}
		cfg, lines, err := parseBlock(c, line)
		if err != nil {
			return nil, err
		}
		if lines.tlsInsecure != 0 {
			log.Warningf("%s:%d - tls_insecure: the https checks of %s do not verify certificates; any server on the port passes",
				c.File(), lines.tlsInsecure, strings.Join(zones, ", "))
		}
		warnIgnored(c, zones, cfg, lines)
		for _, z := range zones {
			if seen[z] {
				return nil, errAt(c, line, "zone %s is configured twice", z)
			}
			seen[z] = true
			zc := cfg
			zc.zone = z
			if zc.source.kind == sourceEtcd && zc.source.etcd.prefix == "" {
				zc.source.etcd.prefix = "/healthdns/" + strings.TrimSuffix(z, ".") + "/"
			}
			switch {
			case zc.nsName == "":
				zc.nsName = dnsutil.Join("ns.dns", z)
			case zc.nsName == z:
				return nil, errAt(c, lines.ns, "ns name %s is the zone itself; its addresses would replace the backends'", z)
			case !dns.IsSubDomain(z, zc.nsName):
				return nil, errAt(c, lines.ns, "ns name %s is not inside zone %s: healthdns answers only names in its zone, so its addresses would never be served; want a name below the zone, such as ns1.%s", zc.nsName, z, z)
			}
			cfgs = append(cfgs, zc)
		}
	}
	return cfgs, nil
}

// warnIgnored logs the properties of a block that do nothing as given, at their lines: a
// Keepalived setup translated literally gives them, and would not do what it did there.
func warnIgnored(c *caddy.Controller, zones []string, cfg poolConfig, lines blockLines) {
	names := strings.Join(zones, ", ")
	if cfg.policy != "weighted" && cfg.policy != "consistent_hash" {
		const ignored = "weight is ignored unless 'policy weighted' or 'policy consistent_hash'"
		if lines.weight != 0 {
			log.Warningf("%s:%d - %s (the policy of %s is %s)", c.File(), lines.weight, ignored, names, cfg.policy)
		}
		if i := slices.IndexFunc(cfg.source.initial, func(b backend) bool { return b.weight != 1 }); i >= 0 {
			b := cfg.source.initial[i]
			log.Warningf("%s:%d - %s (the policy of %s is %s), and %s gives %s weight %d",
				c.File(), cfg.source.line, ignored, names, cfg.policy, cfg.source.path, b.addr, b.weight)
		}
	}
	// A live list's groups come and go by design (a standby out for maintenance leaves one),
	// so only a pool whose backends are all in the Corefile is judged, once.
	if lines.preempt != 0 && cfg.source.kind == sourceNone && !severalGroups(cfg.backends) {
		prop := "nopreempt"
		if !cfg.preempt.Never {
			prop = "preempt_delay"
		}
		log.Warningf("%s:%d - %s does nothing for %s: each address family has one priority group, so no group takes over or back; give the standby backends a lower 'priority' (equal priorities, as a Keepalived pair's 'priority 101' on both nodes, make the backends active/active)",
			c.File(), lines.preempt, prop, names)
	}
}

// severalGroups says whether some address family of the backends has more than one priority.
func severalGroups(backends []backend) bool {
	first := map[bool]uint8{} // by family: is IPv4
	for _, b := range backends {
		v4 := b.addr.Unmap().Is4()
		if p, seen := first[v4]; !seen {
			first[v4] = b.priority
		} else if p != b.priority {
			return true
		}
	}
	return false
}

// parseZones returns the zones of a healthdns line: its arguments, or the server block's zones.
// A zone must be one that queries reach, inside the server block's zones, and the root only when
// written out: from the keys of a "." block it would take every name away from the plugins after.
func parseZones(c *caddy.Controller, line int, args []string) ([]string, error) {
	// The raw arguments are checked before plugin.Host normalises them, which strips a scheme and
	// a port and expands a CIDR into reverse zones.
	for _, a := range args {
		switch {
		case strings.Contains(a, "://"):
			return nil, c.Errf("invalid zone '%s': a scheme belongs in the server block's key (dns://app.lan:53 { ... }), not in a zone", a)
		case strings.Contains(a, "/"):
			return nil, c.Errf("invalid zone '%s': healthdns answers A and AAAA for names, not for an address range; want a domain name such as app.lan", a)
		case strings.Contains(a, ":"):
			return nil, c.Errf("invalid zone '%s': a port belongs in the server block's key (app.lan:1053 { ... }), not in a zone", a)
		case len(plugin.Host(a).NormalizeExact()) != 1:
			return nil, c.Errf("invalid zone '%s': want a domain name such as app.lan", a)
		}
	}
	blockZones := lowerAll(plugin.OriginsFromArgsOrServerBlock(nil, c.ServerBlockKeys))
	if len(args) == 0 {
		if slices.Contains(blockZones, ".") {
			return nil, errAt(c, line, "the root zone . comes from this server block's key: healthdns would answer every name in the world with its backends, and no plugin after it would be reached; name the zones (healthdns app.lan { ... }), or write 'healthdns . { ... }' to serve every name")
		}
		return blockZones, nil
	}
	zones := lowerAll(plugin.OriginsFromArgsOrServerBlock(args, nil))
	if len(blockZones) == 0 {
		return zones, nil // a test's controller, outside any server block
	}
	for _, z := range zones {
		if plugin.Zones(blockZones).Matches(z) == "" {
			return nil, errAt(c, line, "zone %s is outside this server block's zones (%s), so no query for it would reach healthdns; want a zone equal to or below one of them, or a server block of its own", z, strings.Join(blockZones, ", "))
		}
	}
	return zones, nil
}

func lowerAll(names []string) []string {
	for i := range names {
		names[i] = strings.ToLower(names[i])
	}
	return names
}

// blockLines are the lines of a block's properties that parse reports after the block.
type blockLines struct {
	ns          int // the ns line, 0 for the default
	weight      int // the first backend with a weight, 0 for none
	tlsInsecure int // the tls_insecure line, 0 for none
	preempt     int // the nopreempt or preempt_delay line, 0 for neither
}

func parseBlock(c *caddy.Controller, line int) (poolConfig, blockLines, error) {
	cfg := poolConfig{
		spec: health.Spec{
			Interval: defaultInterval,
			Timeout:  defaultTimeout,
			Rise:     defaultRise,
			Fall:     defaultFall,
		},
		policy:     "random",
		answers:    defaultAnswers,
		ttl:        defaultTTL,
		hashPrefix: [2]int{32, 128},
	}
	var lines blockLines
	timingLine := line
	seenAddr := map[netip.Addr]int{}
	firstLine := map[string]int{} // of each property but backend and check, the one that repeats
	checkLines := map[health.Check]int{}
	var tlsCA string
	for c.NextBlock() {
		prop := c.Val()
		if prev, dup := firstLine[prop]; dup {
			return cfg, lines, c.Errf("duplicate '%s' (first on line %d): give it once", prop, prev)
		}
		if prop != "backend" && prop != "check" {
			firstLine[prop] = c.Line()
		}
		args := c.RemainingArgs()
		var err error
		switch prop {
		case "backend":
			var b backend
			b, err = parseBackend(c, args)
			if err == nil {
				if prev, dup := seenAddr[b.addr]; dup {
					err = c.Errf("duplicate backend %s (first on line %d)", b.addr, prev)
				}
				seenAddr[b.addr] = c.Line()
				cfg.backends = append(cfg.backends, b)
				if slices.Contains(args, "weight") && lines.weight == 0 {
					lines.weight = c.Line()
				}
			}
		case "check":
			var chk health.Check
			chk, err = parseCheck(c, args)
			if prev, dup := checkLines[chk]; dup && err == nil {
				err = c.Errf("duplicate check '%s' (first on line %d)", chk, prev)
			}
			checkLines[chk] = c.Line()
			cfg.checks = append(cfg.checks, chk)
			if chk.Kind == health.ICMP && cfg.icmpLine == 0 {
				cfg.icmpLine = c.Line()
			}
		case "nopreempt":
			if len(args) != 0 {
				err = c.Errf("want 'nopreempt' alone")
			}
			cfg.preempt.Never = true
			lines.preempt = c.Line()
		case "preempt_delay":
			cfg.preempt.Delay, err = parseDuration(c, prop, args, time.Millisecond)
			lines.preempt = c.Line()
		case "hash_prefix":
			cfg.hashPrefix, err = parseHashPrefix(c, args)
		case "fast_interval":
			cfg.spec.Fast, err = parseDuration(c, prop, args, minTimeout)
		case "tls_ca":
			if len(args) != 1 {
				err = c.Errf("want 'tls_ca FILE'")
			}
			tlsCA = strings.Join(args, " ")
		case "tls_insecure":
			if len(args) != 0 {
				err = c.Errf("want 'tls_insecure' alone")
			}
			lines.tlsInsecure = c.Line()
		case "interval":
			cfg.spec.Interval, err = parseDuration(c, prop, args, minInterval)
			timingLine = c.Line()
		case "timeout":
			cfg.spec.Timeout, err = parseDuration(c, prop, args, minTimeout)
			timingLine = c.Line()
		case "rise":
			cfg.spec.Rise, err = parseInt(c, prop, args, 1, 1000)
		case "fall":
			cfg.spec.Fall, err = parseInt(c, prop, args, 1, 1000)
		case "policy":
			if len(args) != 1 {
				return cfg, lines, c.ArgErr()
			}
			if _, err = balance.New(args[0]); err != nil {
				err = c.Err(err.Error())
			}
			cfg.policy = args[0]
		case "answers":
			cfg.answers, err = parseInt(c, prop, args, 1, balance.MaxAnswers)
		case "ttl":
			var ttl int
			ttl, err = parseInt(c, prop, args, 0, maxTTL)
			cfg.ttl = uint32(ttl)
		case "all_down":
			cfg.allDown, err = parseAllDown(c, args)
		case "ns":
			cfg.nsName, cfg.nsAddrs, err = parseNS(c, args)
			lines.ns = c.Line()
		case "exec_concurrency":
			cfg.execConcurrency, err = parseInt(c, prop, args, 1, maxExecConcurrency)
			cfg.execConcurrencyLine = c.Line()
		case "fallthrough":
			cfg.fall.SetZonesFromArgs(args)
		case "status":
			cfg.status, err = parseStatus(c, args)
		case "backends_file", "backends_etcd":
			if prev, other := firstLine[otherSource(prop)]; other {
				err = c.Errf("%s and %s (line %d): a pool takes its live list from one source; give one", prop, otherSource(prop), prev)
				break
			}
			if prop == "backends_file" {
				cfg.source, err = parseBackendsFile(c, args)
			} else {
				cfg.source, err = parseBackendsEtcd(c, args)
			}
		default:
			err = c.Errf("unknown property '%s'; want backend, backends_file, backends_etcd, check, interval, fast_interval, timeout, rise, fall, tls_ca, tls_insecure, policy, hash_prefix, answers, ttl, all_down, nopreempt, preempt_delay, exec_concurrency, ns, status or fallthrough", prop)
		}
		if err != nil {
			return cfg, lines, err
		}
	}
	if len(cfg.backends) == 0 && cfg.source.kind == sourceNone {
		return cfg, lines, errAt(c, line, "no backend; want at least one 'backend ADDRESS [weight W]', a 'backends_file PATH' or 'backends_etcd'")
	}
	if len(cfg.checks) == 0 {
		cfg.checks = []health.Check{{Kind: health.ICMP}}
		cfg.icmpLine = line
	}
	if err := applyTLS(c, &cfg, tlsCA, lines.tlsInsecure != 0, firstLine); err != nil {
		return cfg, lines, err
	}
	for _, chk := range cfg.checks {
		// A check that cannot run here (a tls_ca that does not read, a script that is not
		// there or that others can change) fails startup at its line, not every probe.
		if err := chk.Validate(); err != nil {
			at := checkLines[chk]
			if chk.Kind == health.HTTPS && tlsCA != "" {
				at = firstLine["tls_ca"]
			}
			return cfg, lines, errAt(c, at, "check %s: %v", chk, err)
		}
	}
	if cfg.source.kind == sourceFile {
		// A missing or bad file fails startup, as a bad Corefile line does; later it only
		// keeps the last good list.
		list, err := readBackendsFile(cfg.source.path, cfg.backends)
		if err != nil {
			return cfg, lines, errAt(c, cfg.source.line, "backends_file: %v", err)
		}
		// A pool with nothing to probe would start and answer nothing but NODATA: most likely a
		// file not written yet, or the wrong path.
		if len(list) == 0 && len(cfg.backends) == 0 {
			return cfg, lines, errAt(c, cfg.source.line, "backends_file: %s lists no backend, and the block has no 'backend' line: want at least one backend in the file (ADDRESS [weight W] [priority P], one a line)", cfg.source.path)
		}
		cfg.source.initial = list
	}
	if len(cfg.backends) > balance.MaxSetSize {
		return cfg, lines, errAt(c, line, "%d backends; at most %d fit in one zone", len(cfg.backends), balance.MaxSetSize)
	}
	if cfg.spec.Timeout >= cfg.spec.Interval {
		_, timeoutSet := firstLine["timeout"]
		_, intervalSet := firstLine["interval"]
		switch {
		case !timeoutSet:
			return cfg, lines, errAt(c, timingLine, "timeout %s (the default) must be shorter than interval %s: set a timeout below the interval",
				cfg.spec.Timeout, cfg.spec.Interval)
		case !intervalSet:
			return cfg, lines, errAt(c, timingLine, "timeout %s must be shorter than interval %s (the default): set an interval above the timeout, or a shorter timeout",
				cfg.spec.Timeout, cfg.spec.Interval)
		}
		return cfg, lines, errAt(c, timingLine, "timeout %s must be shorter than interval %s", cfg.spec.Timeout, cfg.spec.Interval)
	}
	if cfg.preempt.Never && cfg.preempt.Delay != 0 {
		return cfg, lines, errAt(c, max(firstLine["nopreempt"], firstLine["preempt_delay"]),
			"nopreempt and preempt_delay together: nopreempt never takes back, so there is no delay to wait; give one")
	}
	if at, set := firstLine["hash_prefix"]; set && cfg.policy != "consistent_hash" {
		return cfg, lines, errAt(c, at, "hash_prefix without 'policy consistent_hash': it says how much of a client's address keys the hash")
	}
	if f := cfg.spec.Fast; f != 0 && (f <= cfg.spec.Timeout || f >= cfg.spec.Interval) {
		return cfg, lines, errAt(c, firstLine["fast_interval"], "fast_interval %s must be longer than timeout %s and shorter than interval %s",
			f, cfg.spec.Timeout, cfg.spec.Interval)
	}
	return cfg, lines, nil
}

// applyTLS gives every https check of the block the block's tls_ca and tls_insecure, which mean
// nothing without one.
func applyTLS(c *caddy.Controller, cfg *poolConfig, ca string, insecure bool, lines map[string]int) error {
	https := false
	for i := range cfg.checks {
		if cfg.checks[i].Kind == health.HTTPS {
			cfg.checks[i].TLSCA, cfg.checks[i].TLSInsecure = ca, insecure
			https = true
		}
	}
	switch {
	case !https && ca != "":
		return errAt(c, lines["tls_ca"], "tls_ca without an https check; want 'check https PORT ...' in the block")
	case !https && insecure:
		return errAt(c, lines["tls_insecure"], "tls_insecure without an https check; want 'check https PORT ...' in the block")
	case ca != "" && insecure:
		return errAt(c, lines["tls_insecure"], "tls_insecure with tls_ca: give one; tls_insecure verifies nothing")
	}
	return nil
}

// errAt reports a problem found after the token that caused it was read, at that token's line.
func errAt(c *caddy.Controller, line int, format string, args ...any) error {
	return fmt.Errorf("%s:%d - Error during parsing: %s", c.File(), line, fmt.Sprintf(format, args...))
}

// parseBackend reads a Corefile backend line; backendline.go parses its words, as it does a
// backends_file line's and an etcd key's.
func parseBackend(c *caddy.Controller, args []string) (backend, error) {
	b, err := parseBackendWords(args)
	if err != nil {
		return b, c.Errf("%v", err)
	}
	return b, nil
}

// parseHashPrefix reads 'hash_prefix V4LEN V6LEN'.
func parseHashPrefix(c *caddy.Controller, args []string) ([2]int, error) {
	if len(args) != 2 {
		return [2]int{}, c.Errf("want 'hash_prefix V4LEN V6LEN', such as 'hash_prefix 24 56'")
	}
	v4, err4 := strconv.Atoi(args[0])
	v6, err6 := strconv.Atoi(args[1])
	if err4 != nil || v4 < 0 || v4 > 32 {
		return [2]int{}, c.Errf("invalid hash_prefix IPv4 length '%s': want an integer from 0 to 32", args[0])
	}
	if err6 != nil || v6 < 0 || v6 > 128 {
		return [2]int{}, c.Errf("invalid hash_prefix IPv6 length '%s': want an integer from 0 to 128", args[1])
	}
	return [2]int{v4, v6}, nil
}

func parseAddr(c *caddy.Controller, s string) (netip.Addr, error) {
	addr, err := parseAddrWord(s)
	if err != nil {
		return addr, c.Errf("%v", err)
	}
	return addr, nil
}

const checkForms = "'icmp', 'tcp PORT', 'http PORT [PATH] [expect CODES] [body TEXT | body_exact TEXT] [host NAME]', 'https PORT ...' or 'exec PATH [ARGS...]'"

func parseCheck(c *caddy.Controller, args []string) (health.Check, error) {
	if len(args) == 0 {
		return health.Check{}, c.Errf("want 'check' and one of %s", checkForms)
	}
	kind, rest := args[0], args[1:]
	switch kind {
	case "icmp":
		if len(rest) != 0 {
			return health.Check{}, c.Errf("want 'check icmp' alone; options such as '%s' are for http and https checks", rest[0])
		}
		return health.Check{Kind: health.ICMP}, nil
	case "tcp":
		if len(rest) != 1 {
			if len(rest) > 1 {
				return health.Check{}, c.Errf("want 'check tcp PORT'; options such as '%s' are for http and https checks", rest[1])
			}
			return health.Check{}, c.Errf("want 'check tcp PORT'")
		}
		port, err := parseInt(c, "tcp port", rest, 1, 65535)
		return health.Check{Kind: health.TCP, Port: uint16(port)}, err
	case "http", "https":
		return parseHTTPCheck(c, kind, rest)
	case "exec":
		if len(rest) == 0 {
			return health.Check{}, c.Errf("want 'check exec PATH [ARGS...]'")
		}
		if !filepath.IsAbs(rest[0]) {
			return health.Check{}, c.Errf("invalid exec path '%s': want an absolute path; scripts run directly, never through a shell or $PATH", rest[0])
		}
		return health.Check{Kind: health.Exec, Command: rest[0], Args: health.JoinArgs(rest[1:])}, nil
	}
	return health.Check{}, c.Errf("unknown check '%s'; want %s", strings.Join(args, " "), checkForms)
}

// parseHTTPCheck reads 'http PORT [PATH] [expect CODES] [body TEXT | body_exact TEXT] [host NAME]'
// after its kind.
func parseHTTPCheck(c *caddy.Controller, kind string, args []string) (health.Check, error) {
	form := fmt.Sprintf("'check %s PORT [PATH] [expect CODES] [body TEXT | body_exact TEXT] [host NAME]'", kind)
	if len(args) == 0 {
		return health.Check{}, c.Errf("want %s", form)
	}
	port, err := parseInt(c, kind+" port", args[:1], 1, 65535)
	if err != nil {
		return health.Check{}, err
	}
	chk := health.Check{Kind: health.HTTP, Port: uint16(port), Path: "/"}
	if kind == "https" {
		chk.Kind = health.HTTPS
	}
	args = args[1:]
	if len(args) > 0 && strings.HasPrefix(args[0], "/") {
		if strings.ContainsAny(args[0], " \t\r\n") || !utf8.ValidString(args[0]) {
			return chk, c.Errf("invalid path %q: want a path such as /healthz, without spaces", args[0])
		}
		chk.Path, args = args[0], args[1:]
	}
	seen := map[string]bool{}
	for len(args) > 0 {
		opt := args[0]
		switch {
		case strings.HasPrefix(opt, "/"):
			return chk, c.Errf("path '%s' must come right after the port; want %s", opt, form)
		case opt != "expect" && opt != "body" && opt != "body_exact" && opt != "host":
			return chk, c.Errf("unknown %s check option '%s'; want %s", kind, opt, form)
		case len(args) < 2:
			return chk, c.Errf("'%s' wants a value; want %s", opt, form)
		}
		if seen[opt] {
			return chk, c.Errf("'%s' given twice in one check", opt)
		}
		if (opt == "body" && seen["body_exact"]) || (opt == "body_exact" && seen["body"]) {
			return chk, c.Errf("'body' and 'body_exact' in one check: give one; body finds TEXT anywhere in the body, body_exact wants the body to be TEXT")
		}
		seen[opt] = true
		val := args[1]
		switch opt {
		case "expect":
			if err := health.CheckStatusCodes(val); err != nil {
				return chk, c.Err(err.Error())
			}
			chk.Expect = val
		case "body":
			if val == "" {
				return chk, c.Errf("invalid body '': want the text the body must hold")
			}
			chk.Body = val
		case "body_exact":
			if val == "" || strings.TrimSpace(val) != val {
				return chk, c.Errf("invalid body_exact %q: want the text the whole body must be, without white space around it (the body's own is trimmed)", val)
			}
			chk.Body, chk.BodyExact = val, true
		case "host":
			if _, ok := dns.IsDomainName(val); !ok || strings.ContainsAny(val, " /:") {
				return chk, c.Errf("invalid host '%s': want a host name such as app.lan", val)
			}
			chk.Host = strings.TrimSuffix(val, ".")
		}
		args = args[2:]
	}
	return chk, nil
}

func parseDuration(c *caddy.Controller, name string, args []string, floor time.Duration) (time.Duration, error) {
	if len(args) != 1 {
		return 0, c.Errf("want '%s DURATION'", name)
	}
	d, err := time.ParseDuration(args[0])
	if err != nil || d <= 0 {
		return 0, c.Errf("invalid %s '%s': want a positive duration such as 500ms or 2s", name, args[0])
	}
	if d < floor {
		return 0, c.Errf("invalid %s '%s': want at least %s", name, args[0], floor)
	}
	return d, nil
}

func parseInt(c *caddy.Controller, name string, args []string, lo, hi int) (int, error) {
	if len(args) != 1 {
		return 0, c.Errf("want '%s N'", name)
	}
	n, err := strconv.Atoi(args[0])
	if err != nil || n < lo || n > hi {
		return 0, c.Errf("invalid %s '%s': want an integer from %d to %d", name, args[0], lo, hi)
	}
	return n, nil
}

func parseAllDown(c *caddy.Controller, args []string) (allDownMode, error) {
	if len(args) == 1 {
		for m := allDownServeAll; m <= allDownFallthrough; m++ {
			if args[0] == m.String() {
				return m, nil
			}
		}
	}
	return 0, c.Errf("invalid all_down '%s': want serve_all, servfail or fallthrough", strings.Join(args, " "))
}

func parseNS(c *caddy.Controller, args []string) (string, []netip.Addr, error) {
	if len(args) < 2 {
		return "", nil, c.Errf("want 'ns NAME ADDRESS...'")
	}
	name := strings.ToLower(dns.Fqdn(args[0]))
	if _, ok := dns.IsDomainName(name); !ok {
		return "", nil, c.Errf("invalid ns name '%s'", args[0])
	}
	var addrs []netip.Addr
	for _, a := range args[1:] {
		addr, err := parseAddr(c, a)
		if err != nil {
			return "", nil, err
		}
		addrs = append(addrs, addr)
	}
	return name, addrs, nil
}

// serverLabel is the server label that CoreDNS's own metrics (metrics.WithServer, which reads
// dnsserver.Server.Addr) give this server block's queries: transport://host:port, formatted as
// CoreDNS names its listeners, so that our series join coredns_dns_requests_total. A block
// served on several addresses (several bind addresses, or keys on different ports) still has
// one plugin instance, set up for its first key: its series carry that key's first address.
func serverLabel(cfg *dnsserver.Config) string {
	host := ""
	if len(cfg.ListenHosts) > 0 {
		host = cfg.ListenHosts[0]
	}
	addr := net.JoinHostPort(host, cfg.Port)
	if a, err := net.ResolveTCPAddr("tcp", addr); err == nil { // as CoreDNS does: "0:0::1" is "[::1]:53"
		addr = a.String()
	}
	return cfg.Transport + "://" + addr
}

// serverAddrs returns the addresses the server answers on, for the zone's NS host: the bound
// ones, or every interface address when bound to all (as the kubernetes plugin does), leaving
// out loopback unless nothing else exists.
func serverAddrs(listenHosts []string) []netip.Addr {
	var addrs []netip.Addr
	wildcard := len(listenHosts) == 0
	for _, h := range listenHosts {
		a, err := netip.ParseAddr(h)
		if err != nil || a.IsUnspecified() || h == "" {
			wildcard = true
			continue
		}
		addrs = append(addrs, a.Unmap())
	}
	if !wildcard {
		return addrs
	}
	ifaddrs, _ := net.InterfaceAddrs()
	var loopback []netip.Addr
	for _, ia := range ifaddrs {
		p, err := netip.ParsePrefix(ia.String())
		if err != nil {
			continue
		}
		a := p.Addr().Unmap()
		switch {
		case a.IsLinkLocalUnicast():
		case a.IsLoopback():
			loopback = append(loopback, a)
		default:
			addrs = append(addrs, a)
		}
	}
	if len(addrs) == 0 {
		addrs = loopback
	}
	return addrs
}

// OnStartup starts the handler's pools alone, as the instance's lifecycle starts every block's.
func (h *HealthDNS) OnStartup() error {
	pools := make([]*Pool, 0, len(h.pools))
	for _, p := range h.pools {
		pools = append(pools, p)
	}
	startPools(pools)
	return nil
}

// OnShutdown releases the probe loops; loops a newer instance adopted keep running.
func (h *HealthDNS) OnShutdown() error {
	for _, p := range h.pools {
		p.stop()
	}
	return nil
}
