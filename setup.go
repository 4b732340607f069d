package healthdns

import (
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/coredns/caddy"
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/plugin"
	clog "github.com/coredns/coredns/plugin/pkg/log"

	"github.com/healthdns/healthdns/event"
	"github.com/healthdns/healthdns/health"
	"github.com/healthdns/healthdns/notify"
	"github.com/healthdns/healthdns/status"
)

const pluginName = "healthdns"

var log = clog.NewWithPlugin(pluginName)

// process is what outlives a plugin instance, the one piece of package-level state besides
// CoreDNS's registrations: a Corefile reload builds a new instance, which adopts the running
// probe loops (targets) and status listeners of the one it replaces.
type process struct {
	targets *health.Registry
	status  *status.Listeners
	events  func() *event.Bus // made at the first setup, kept by every reload
	notify  *notify.Hub       // the notify targets, which a reload that keeps their line keeps
	stalls  *watchdog         // publishes the probe loops' stalls
	started time.Time         // for the status page's uptime
}

var proc = &process{
	targets: health.NewRegistry(observer{}, health.WithNotice(func(line string) { log.Info(line) })),
	status:  status.NewListeners(),
	events:  sync.OnceValue(newProcessEvents),
	notify:  notify.NewHub(notifyMetrics),
	stalls:  newWatchdog(watchEvery),
	started: time.Now(),
}

func init() { plugin.Register(pluginName, setup) }

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
	h := &HealthDNS{pools: map[string]*zonePool{}}
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
				return plugin.Error(pluginName, errAt(c, cfg.icmpLine, "zone %s: %v", cfg.Zone, icmpErr))
			}
		}
		if cfg.nsAddrs == nil {
			cfg.nsAddrs = serverAddrs
		}
		cfg.Server = server
		if hosts := dnsserver.GetConfig(c).ListenHosts; len(hosts) > 0 && hosts[0] != "" {
			cfg.Bind = hosts[0]
		}
		if cfg.status.Token != "" {
			cfg.FailBackAPI = cfg.status.Addr
		}
		checked(c, cfg)
		h.pools[cfg.Zone] = newZonePool(cfg, proc.targets)
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
		if len(cfg.notify) > 0 {
			lc.notify = append(lc.notify, notify.Scope{Server: server, Zone: cfg.Zone, Targets: cfg.notify})
		}
	}
	for _, cfg := range cfgs {
		if cfg.status.Addr != "" {
			if err := lc.addStatus(cfg.status, h.pools[cfg.Zone]); err != nil {
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
	pools := make([]*zonePool, 0, len(h.pools))
	for _, p := range h.pools {
		pools = append(pools, p)
	}
	startPools(pools, proc.targets)
	return nil
}

// OnShutdown releases the probe loops; loops a newer instance adopted keep running.
func (h *HealthDNS) OnShutdown() error {
	for _, p := range h.pools {
		p.pool.Stop()
	}
	return nil
}
