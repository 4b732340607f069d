package healthdns

import (
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

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

// targets is the one registry of probe loops. It is package-level because it must outlive a
// plugin instance: a Corefile reload builds a new instance that adopts the running loops.
var targets = health.NewRegistry(observer{})

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
	maxTTL          = 86400

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
	addr   netip.Addr
	weight uint32
}

// poolConfig is one zone's parsed configuration.
type poolConfig struct {
	zone     string // lower case, fully qualified
	backends []backend
	spec     health.Spec
	policy   string
	answers  int
	ttl      uint32
	allDown  allDownMode
	nsName   string       // lower case, fully qualified
	nsAddrs  []netip.Addr // nil: the server's own addresses
	fall     fall.F
	server   string // set by setup: the server label of CoreDNS's metrics, for ours

	checkLine int // the check's line, or the healthdns line for the default: where setup reports it
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
		if cfg.spec.Check.Kind == health.ICMP {
			if !icmpChecked {
				_, icmpErr = detectICMP()
				icmpChecked = true
			}
			if icmpErr != nil {
				return plugin.Error(pluginName, errAt(c, cfg.checkLine, "zone %s: %v", cfg.zone, icmpErr))
			}
		}
		if cfg.nsAddrs == nil {
			cfg.nsAddrs = serverAddrs
		}
		cfg.server = server
		policy, _ := balance.New(cfg.policy) // parse validated the name
		h.pools[cfg.zone] = newPool(cfg, policy, targets)
	}

	// Nothing starts here: the instance's one OnStartup starts every block's pools together.
	lifecycleOf(c, targets).add(h)

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
		if lines.weight != 0 && cfg.policy != "weighted" {
			log.Warningf("%s:%d - weight is ignored unless 'policy weighted' (the policy of %s is %s)",
				c.File(), lines.weight, strings.Join(zones, ", "), cfg.policy)
		}
		for _, z := range zones {
			if seen[z] {
				return nil, errAt(c, line, "zone %s is configured twice", z)
			}
			seen[z] = true
			zc := cfg
			zc.zone = z
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
	ns     int // the ns line, 0 for the default
	weight int // the first backend with a weight, 0 for none
}

func parseBlock(c *caddy.Controller, line int) (poolConfig, blockLines, error) {
	cfg := poolConfig{
		spec: health.Spec{
			Check:    health.Check{Kind: health.ICMP},
			Interval: defaultInterval,
			Timeout:  defaultTimeout,
			Rise:     defaultRise,
			Fall:     defaultFall,
		},
		policy:    "random",
		answers:   defaultAnswers,
		ttl:       defaultTTL,
		checkLine: line,
	}
	var lines blockLines
	timingLine := line
	seenAddr := map[netip.Addr]int{}
	firstLine := map[string]int{} // of each property but backend, the one that repeats
	for c.NextBlock() {
		prop := c.Val()
		if prev, dup := firstLine[prop]; dup {
			return cfg, lines, c.Errf("duplicate '%s' (first on line %d): give it once", prop, prev)
		}
		if prop != "backend" {
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
				if len(args) == 3 && lines.weight == 0 {
					lines.weight = c.Line()
				}
			}
		case "check":
			cfg.spec.Check, err = parseCheck(c, args)
			cfg.checkLine = c.Line()
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
		case "fallthrough":
			cfg.fall.SetZonesFromArgs(args)
		default:
			err = c.Errf("unknown property '%s'; want backend, check, interval, timeout, rise, fall, policy, answers, ttl, all_down, ns or fallthrough", prop)
		}
		if err != nil {
			return cfg, lines, err
		}
	}
	if len(cfg.backends) == 0 {
		return cfg, lines, errAt(c, line, "no backend; want at least one 'backend ADDRESS [weight W]'")
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
	return cfg, lines, nil
}

// errAt reports a problem found after the token that caused it was read, at that token's line.
func errAt(c *caddy.Controller, line int, format string, args ...any) error {
	return fmt.Errorf("%s:%d - Error during parsing: %s", c.File(), line, fmt.Sprintf(format, args...))
}

func parseBackend(c *caddy.Controller, args []string) (backend, error) {
	if len(args) != 1 && len(args) != 3 {
		return backend{}, c.Errf("want 'backend ADDRESS [weight W]', got %d arguments", len(args))
	}
	addr, err := parseAddr(c, args[0])
	if err != nil {
		return backend{}, err
	}
	b := backend{addr: addr, weight: 1}
	if len(args) == 3 {
		if args[1] != "weight" {
			return b, c.Errf("unknown backend option '%s'; want 'weight W'", args[1])
		}
		w, err := parseInt(c, "weight", args[2:], 1, maxWeight)
		if err != nil {
			return b, err
		}
		b.weight = uint32(w)
	}
	return b, nil
}

func parseAddr(c *caddy.Controller, s string) (netip.Addr, error) {
	addr, err := netip.ParseAddr(s)
	if err != nil {
		return addr, c.Errf("invalid address '%s': want an IPv4 or IPv6 literal", s)
	}
	if addr.Zone() != "" {
		return addr, c.Errf("invalid address '%s': a scoped (zone) address cannot be served in DNS", s)
	}
	// Unmapped first: ::ffff:0.0.0.0 is as unspecified as 0.0.0.0, and is served as it.
	addr = addr.Unmap()
	var not string
	switch {
	case addr.IsUnspecified():
		not = "unspecified"
	case addr.IsMulticast():
		not = "multicast"
	case addr == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
		// The limited broadcast (RFC 919); a network's own broadcast needs its prefix to be known.
		not = "broadcast"
	default:
		return addr, nil
	}
	return addr, c.Errf("invalid address '%s': %s, not the address of a host", s, not)
}

func parseCheck(c *caddy.Controller, args []string) (health.Check, error) {
	switch {
	case len(args) == 1 && args[0] == "icmp":
		return health.Check{Kind: health.ICMP}, nil
	case len(args) == 2 && args[0] == "tcp":
		port, err := parseInt(c, "tcp port", args[1:], 1, 65535)
		return health.Check{Kind: health.TCP, Port: uint16(port)}, err
	case len(args) >= 1 && args[0] == "tcp":
		return health.Check{}, c.Errf("want 'check tcp PORT'")
	}
	return health.Check{}, c.Errf("unknown check '%s'; want 'icmp' or 'tcp PORT'", strings.Join(args, " "))
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
