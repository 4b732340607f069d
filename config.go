package healthdns

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/coredns/caddy"
	"github.com/coredns/coredns/plugin"
	"github.com/coredns/coredns/plugin/pkg/dnsutil"
	"github.com/coredns/coredns/plugin/pkg/fall"
	"github.com/miekg/dns"

	"github.com/healthdns/healthdns/balance"
	"github.com/healthdns/healthdns/health"
	"github.com/healthdns/healthdns/notify"
	"github.com/healthdns/healthdns/pool"
	"github.com/healthdns/healthdns/status"
)

// Defaults, as documented in README.md.
const (
	defaultInterval = time.Second
	defaultTimeout  = 500 * time.Millisecond
	defaultRise     = 2
	defaultFall     = 2
	defaultAnswers  = 1
	defaultTTL      = 5
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

// poolConfig is one zone's parsed configuration: its pool's, and how the plugin answers from it.
type poolConfig struct {
	pool.Config

	answers    int
	ttl        uint32
	nsName     string       // lower case, fully qualified
	nsAddrs    []netip.Addr // nil: the server's own addresses
	fall       fall.F
	hashPrefix [2]int          // consistent_hash: the client address bits of the key, IPv4 and IPv6
	status     status.Config   // the status listener this pool shows on; Addr "" for none
	notify     []notify.Target // the block's notify lines, in order

	icmpLine int // the ICMP check's line, or the healthdns line for the default: where setup reports it

	// exec_concurrency: how many scripts the process runs at once, 0 when the block does not
	// say, and its line. It is the process's, not the pool's: see lifecycle.setExecConcurrency.
	execConcurrency     int
	execConcurrencyLine int
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
			zc.Zone = z
			if zc.Source.Kind == pool.SourceEtcd && zc.Source.Etcd.Prefix == "" {
				zc.Source.Etcd.Prefix = "/healthdns/" + strings.TrimSuffix(z, ".") + "/"
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
	if cfg.Policy != "weighted" && cfg.Policy != "consistent_hash" {
		const ignored = "weight is ignored unless 'policy weighted' or 'policy consistent_hash'"
		if lines.weight != 0 {
			log.Warningf("%s:%d - %s (the policy of %s is %s)", c.File(), lines.weight, ignored, names, cfg.Policy)
		}
		if i := slices.IndexFunc(cfg.Source.Initial, func(b pool.Backend) bool { return b.Weight != 1 }); i >= 0 {
			b := cfg.Source.Initial[i]
			log.Warningf("%s:%d - %s (the policy of %s is %s), and %s gives %s weight %d",
				c.File(), cfg.Source.Line, ignored, names, cfg.Policy, cfg.Source.Path, b.Addr, b.Weight)
		}
	}
	// A live list's groups come and go by design (a standby out for maintenance leaves one),
	// so only a pool whose backends are all in the Corefile is judged, once.
	if lines.preempt != 0 && cfg.Source.Kind == pool.SourceNone && !severalGroups(cfg.Backends) {
		prop := "nopreempt"
		if !cfg.Preempt.Never {
			prop = "preempt_delay"
		}
		log.Warningf("%s:%d - %s does nothing for %s: each address family has one priority group, so no group takes over or back; give the standby backends a lower 'priority' (equal priorities, as a Keepalived pair's 'priority 101' on both nodes, make the backends active/active)",
			c.File(), lines.preempt, prop, names)
	}
}

// severalGroups says whether some address family of the backends has more than one priority.
func severalGroups(backends []pool.Backend) bool {
	first := map[bool]uint8{} // by family: is IPv4
	for _, b := range backends {
		v4 := b.Addr.Unmap().Is4()
		if p, seen := first[v4]; !seen {
			first[v4] = b.Priority
		} else if p != b.Priority {
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
		Config: pool.Config{
			Spec: health.Spec{
				Interval: defaultInterval,
				Timeout:  defaultTimeout,
				Rise:     defaultRise,
				Fall:     defaultFall,
			},
			Policy: "random",
		},
		answers:    defaultAnswers,
		ttl:        defaultTTL,
		hashPrefix: [2]int{32, 128},
	}
	var lines blockLines
	timingLine := line
	seenAddr := map[netip.Addr]int{}
	firstLine := map[string]int{} // of each property but backend and check, the one that repeats
	checkLines := map[health.Check]int{}
	pushLine := 0 // of the push check, if any
	var tlsCA string
	for c.NextBlock() {
		prop := c.Val()
		if prev, dup := firstLine[prop]; dup {
			return cfg, lines, c.Errf("duplicate '%s' (first on line %d): give it once", prop, prev)
		}
		if prop != "backend" && prop != "check" && prop != "notify" {
			firstLine[prop] = c.Line()
		}
		args := c.RemainingArgs()
		var err error
		switch prop {
		case "backend":
			var b pool.Backend
			b, err = parseBackend(c, args)
			if err == nil {
				if prev, dup := seenAddr[b.Addr]; dup {
					err = c.Errf("duplicate backend %s (first on line %d)", b.Addr, prev)
				}
				seenAddr[b.Addr] = c.Line()
				cfg.Backends = append(cfg.Backends, b)
				if slices.Contains(args, "weight") && lines.weight == 0 {
					lines.weight = c.Line()
				}
			}
		case "check":
			var chk health.Check
			if len(args) > 0 && args[0] == "push" {
				chk, cfg.ReportToken, err = parsePushCheck(c, args[1:])
				if pushLine != 0 && err == nil {
					err = c.Errf("a second push check (the first on line %d): a node's reports feed one", pushLine)
				}
				pushLine = c.Line()
			} else {
				chk, err = parseCheck(c, args)
			}
			if prev, dup := checkLines[chk]; dup && err == nil {
				err = c.Errf("duplicate check '%s' (first on line %d)", chk, prev)
			}
			checkLines[chk] = c.Line()
			cfg.Checks = append(cfg.Checks, chk)
			if chk.Kind == health.ICMP && cfg.icmpLine == 0 {
				cfg.icmpLine = c.Line()
			}
		case "nopreempt":
			if len(args) != 0 {
				err = c.Errf("want 'nopreempt' alone")
			}
			cfg.Preempt.Never = true
			lines.preempt = c.Line()
		case "preempt_delay":
			cfg.Preempt.Delay, err = parseDuration(c, prop, args, time.Millisecond)
			lines.preempt = c.Line()
		case "hash_prefix":
			cfg.hashPrefix, err = parseHashPrefix(c, args)
		case "fast_interval":
			cfg.Spec.Fast, err = parseDuration(c, prop, args, minTimeout)
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
			cfg.Spec.Interval, err = parseDuration(c, prop, args, minInterval)
			timingLine = c.Line()
		case "timeout":
			cfg.Spec.Timeout, err = parseDuration(c, prop, args, minTimeout)
			timingLine = c.Line()
		case "rise":
			cfg.Spec.Rise, err = parseInt(c, prop, args, 1, 1000)
		case "fall":
			cfg.Spec.Fall, err = parseInt(c, prop, args, 1, 1000)
		case "policy":
			if len(args) != 1 {
				return cfg, lines, c.ArgErr()
			}
			if _, err = balance.New(args[0]); err != nil {
				err = c.Err(err.Error())
			}
			cfg.Policy = args[0]
		case "answers":
			cfg.answers, err = parseInt(c, prop, args, 1, balance.MaxAnswers)
		case "ttl":
			var ttl int
			ttl, err = parseInt(c, prop, args, 0, maxTTL)
			cfg.ttl = uint32(ttl)
		case "all_down":
			cfg.AllDown, err = parseAllDown(c, args)
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
		case "state":
			cfg.State, err = parseState(c, args)
		case "fleet_quorum":
			cfg.Quorum, err = parseFleetQuorum(c, args)
		case "notify":
			var t notify.Target
			t, err = parseNotify(c, args)
			cfg.notify = append(cfg.notify, t)
		case "backends_file", "backends_etcd":
			if prev, other := firstLine[otherSource(prop)]; other {
				err = c.Errf("%s and %s (line %d): a pool takes its live list from one source; give one", prop, otherSource(prop), prev)
				break
			}
			if prop == "backends_file" {
				cfg.Source, err = parseBackendsFile(c, args)
			} else {
				cfg.Source, err = parseBackendsEtcd(c, args)
			}
		default:
			err = c.Errf("unknown property '%s'; want backend, backends_file, backends_etcd, check, interval, fast_interval, timeout, rise, fall, tls_ca, tls_insecure, policy, hash_prefix, answers, ttl, all_down, nopreempt, preempt_delay, fleet_quorum, exec_concurrency, ns, status, state, notify or fallthrough", prop)
		}
		if err != nil {
			return cfg, lines, err
		}
	}
	if len(cfg.Backends) == 0 && cfg.Source.Kind == pool.SourceNone {
		return cfg, lines, errAt(c, line, "no backend; want at least one 'backend ADDRESS [weight W]', a 'backends_file PATH' or 'backends_etcd'")
	}
	if len(cfg.Checks) == 0 {
		cfg.Checks = []health.Check{{Kind: health.ICMP}}
		cfg.icmpLine = line
	}
	if err := applyTLS(c, &cfg, tlsCA, lines.tlsInsecure != 0, firstLine); err != nil {
		return cfg, lines, err
	}
	for _, chk := range cfg.Checks {
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
	if err := pushNeeds(&cfg, pushLine); err != nil {
		return cfg, lines, errAt(c, pushLine, "%v", err)
	}
	if cfg.Source.Kind == pool.SourceFile {
		// A missing or bad file fails startup, as a bad Corefile line does; later it only
		// keeps the last good list.
		if err := cfg.Source.ReadFile(cfg.Backends); err != nil {
			return cfg, lines, errAt(c, cfg.Source.Line, "backends_file: %v", err)
		}
		list := cfg.Source.Initial
		// A pool with nothing to probe would start and answer nothing but NODATA: most likely a
		// file not written yet, or the wrong path.
		if len(list) == 0 && len(cfg.Backends) == 0 {
			return cfg, lines, errAt(c, cfg.Source.Line, "backends_file: %s lists no backend, and the block has no 'backend' line: want at least one backend in the file (ADDRESS [weight W] [priority P], one a line)", cfg.Source.Path)
		}
	}
	if len(cfg.Backends) > balance.MaxSetSize {
		return cfg, lines, errAt(c, line, "%d backends; at most %d fit in one zone", len(cfg.Backends), balance.MaxSetSize)
	}
	if cfg.Spec.Timeout >= cfg.Spec.Interval {
		_, timeoutSet := firstLine["timeout"]
		_, intervalSet := firstLine["interval"]
		switch {
		case !timeoutSet:
			return cfg, lines, errAt(c, timingLine, "timeout %s (the default) must be shorter than interval %s: set a timeout below the interval",
				cfg.Spec.Timeout, cfg.Spec.Interval)
		case !intervalSet:
			return cfg, lines, errAt(c, timingLine, "timeout %s must be shorter than interval %s (the default): set an interval above the timeout, or a shorter timeout",
				cfg.Spec.Timeout, cfg.Spec.Interval)
		}
		return cfg, lines, errAt(c, timingLine, "timeout %s must be shorter than interval %s", cfg.Spec.Timeout, cfg.Spec.Interval)
	}
	if cfg.Preempt.Never && cfg.Preempt.Delay != 0 {
		return cfg, lines, errAt(c, max(firstLine["nopreempt"], firstLine["preempt_delay"]),
			"nopreempt and preempt_delay together: nopreempt never takes back, so there is no delay to wait; give one")
	}
	if at, set := firstLine["fleet_quorum"]; set && (!cfg.Preempt.Never || cfg.Source.Kind != pool.SourceEtcd) {
		return cfg, lines, errAt(c, at, "fleet_quorum without 'nopreempt' and 'backends_etcd': it says how many servers of a fleet agreeing through etcd must see a group down")
	}
	if at, set := firstLine["hash_prefix"]; set && cfg.Policy != "consistent_hash" {
		return cfg, lines, errAt(c, at, "hash_prefix without 'policy consistent_hash': it says how much of a client's address keys the hash")
	}
	if f := cfg.Spec.Fast; f != 0 && (f <= cfg.Spec.Timeout || f >= cfg.Spec.Interval) {
		return cfg, lines, errAt(c, firstLine["fast_interval"], "fast_interval %s must be longer than timeout %s and shorter than interval %s",
			f, cfg.Spec.Timeout, cfg.Spec.Interval)
	}
	return cfg, lines, nil
}

// pushNeeds refuses a push check that could never hear a report: its reports come to the
// block's status listener, with a token (the listener's or the check's own).
func pushNeeds(cfg *poolConfig, line int) error {
	switch {
	case line == 0:
		return nil
	case cfg.status.Addr == "":
		return fmt.Errorf("check push takes its reports on the status listener, and the block has none: want 'status ADDRESS token FILE' beside it")
	case cfg.status.Token == "" && cfg.ReportToken == "":
		return fmt.Errorf("check push takes reports only with a token, and neither it nor the status listener on %s has one: want 'check push TTL token FILE', or a token on the status line", cfg.status.Addr)
	}
	return nil
}

// errAt reports a problem found after the token that caused it was read, at that token's line.
func errAt(c *caddy.Controller, line int, format string, args ...any) error {
	return fmt.Errorf("%s:%d - Error during parsing: %s", c.File(), line, fmt.Sprintf(format, args...))
}
