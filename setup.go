package healthdns

import (
	"fmt"
	"net"
	"net/netip"
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
}

func setup(c *caddy.Controller) error {
	cfgs, err := parse(c)
	if err != nil {
		return plugin.Error(pluginName, err)
	}
	var icmpMode *bool // decided once per setup, at the first ICMP pool
	serverAddrs := serverAddrs(dnsserver.GetConfig(c).ListenHosts)
	h := &HealthDNS{pools: map[string]*Pool{}}
	for _, cfg := range cfgs {
		prober, err := proberFor(cfg.spec.Check, &icmpMode)
		if err != nil {
			return plugin.Error(pluginName, c.Errf("zone %s: %v", cfg.zone, err))
		}
		if cfg.nsAddrs == nil {
			cfg.nsAddrs = serverAddrs
		}
		policy, _ := balance.New(cfg.policy) // parse validated the name
		h.pools[cfg.zone] = newPool(cfg, policy, prober, targets)
	}

	// Nothing starts here: the instance's one OnStartup starts every block's pools together.
	lifecycleOf(c, targets).add(h)

	dnsserver.GetConfig(c).AddPlugin(func(next plugin.Handler) plugin.Handler {
		h.Next = next
		return h
	})
	return nil
}

// proberFor returns the prober of a check from the registry. ICMP's socket mode is decided here,
// at setup, so that a machine where ICMP cannot work fails at startup with the fix rather than
// marking every backend down.
func proberFor(c health.Check, privileged **bool) (health.Prober, error) {
	if c.Kind != health.ICMP {
		return targets.Prober(c, false)
	}
	if *privileged == nil {
		mode, err := health.ICMPMode()
		if err != nil {
			return nil, err
		}
		*privileged = &mode
	}
	return targets.Prober(c, **privileged)
}

// parse reads every healthdns block of a server block: one poolConfig per zone.
func parse(c *caddy.Controller) ([]poolConfig, error) {
	var cfgs []poolConfig
	seen := map[string]bool{}
	for c.Next() {
		line := c.Line()
		zones, err := parseZones(c, c.RemainingArgs())
		if err != nil {
			return nil, err
		}
		cfg, err := parseBlock(c, line)
		if err != nil {
			return nil, err
		}
		for _, z := range zones {
			if seen[z] {
				return nil, errAt(c, line, "zone %s is configured twice", z)
			}
			seen[z] = true
			zc := cfg
			zc.zone = z
			if zc.nsName == "" {
				zc.nsName = dnsutil.Join("ns.dns", z)
			}
			if zc.nsName == z {
				return nil, errAt(c, line, "ns name %s is the zone itself; its addresses would replace the backends'", z)
			}
			cfgs = append(cfgs, zc)
		}
	}
	return cfgs, nil
}

func parseZones(c *caddy.Controller, args []string) ([]string, error) {
	for _, a := range args {
		if len(plugin.Host(a).NormalizeExact()) == 0 {
			return nil, c.Errf("invalid zone %q", a)
		}
	}
	zones := plugin.OriginsFromArgsOrServerBlock(args, c.ServerBlockKeys)
	for i := range zones {
		zones[i] = strings.ToLower(zones[i])
	}
	return zones, nil
}

func parseBlock(c *caddy.Controller, line int) (poolConfig, error) {
	cfg := poolConfig{
		spec: health.Spec{
			Check:    health.Check{Kind: health.ICMP},
			Interval: defaultInterval,
			Timeout:  defaultTimeout,
			Rise:     defaultRise,
			Fall:     defaultFall,
		},
		policy:  "random",
		answers: defaultAnswers,
		ttl:     defaultTTL,
	}
	timingLine := line
	seenAddr := map[netip.Addr]int{}
	for c.NextBlock() {
		prop := c.Val()
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
			}
		case "check":
			cfg.spec.Check, err = parseCheck(c, args)
		case "interval":
			cfg.spec.Interval, err = parseDuration(c, prop, args)
			timingLine = c.Line()
		case "timeout":
			cfg.spec.Timeout, err = parseDuration(c, prop, args)
			timingLine = c.Line()
		case "rise":
			cfg.spec.Rise, err = parseInt(c, prop, args, 1, 1000)
		case "fall":
			cfg.spec.Fall, err = parseInt(c, prop, args, 1, 1000)
		case "policy":
			if len(args) != 1 {
				return cfg, c.ArgErr()
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
		case "fallthrough":
			cfg.fall.SetZonesFromArgs(args)
		default:
			err = c.Errf("unknown property '%s'; want backend, check, interval, timeout, rise, fall, policy, answers, ttl, all_down, ns or fallthrough", prop)
		}
		if err != nil {
			return cfg, err
		}
	}
	if len(cfg.backends) == 0 {
		return cfg, errAt(c, line, "no backend; want at least one 'backend ADDRESS [weight W]'")
	}
	if len(cfg.backends) > balance.MaxSetSize {
		return cfg, errAt(c, line, "%d backends; at most %d fit in one zone", len(cfg.backends), balance.MaxSetSize)
	}
	if cfg.spec.Timeout >= cfg.spec.Interval {
		return cfg, errAt(c, timingLine, "timeout %s must be shorter than interval %s", cfg.spec.Timeout, cfg.spec.Interval)
	}
	return cfg, nil
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
	if addr.IsUnspecified() || addr.IsMulticast() {
		return addr, c.Errf("invalid address '%s': unspecified or multicast", s)
	}
	return addr.Unmap(), nil
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

func parseDuration(c *caddy.Controller, name string, args []string) (time.Duration, error) {
	if len(args) != 1 {
		return 0, c.Errf("want '%s DURATION'", name)
	}
	d, err := time.ParseDuration(args[0])
	if err != nil || d <= 0 {
		return 0, c.Errf("invalid %s '%s': want a positive duration such as 500ms or 2s", name, args[0])
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
