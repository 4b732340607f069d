package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/healthdns/healthdns/test/netlab"
)

// keepalivedSystem: b1 and b2 share the VIP over VRRP (unicast peers), b1 preferred. Clients
// connect to the VIP; the host holding it answers.
func keepalivedSystem(settings string, version int, advert string) system {
	return system{name: "keepalived", settings: settings, needs: "keepalived", vip: true, start: func(l *lab) error {
		for _, h := range []struct {
			host       *netlab.Host
			self, peer string
			priority   int
		}{{l.b1, b1Addr, b2Addr, 150}, {l.b2, b2Addr, b1Addr, 100}} {
			dir := filepath.Join(l.dir, "keepalived", h.host.Name)
			conf, err := writeFile(dir, "keepalived.conf", fmt.Sprintf(`global_defs {
    router_id %s
    vrrp_version %d
    vrrp_garp_master_delay 0
    vrrp_garp_master_repeat 3
    vrrp_garp_master_refresh 0
}
vrrp_instance VI_1 {
    state BACKUP
    interface eth0
    virtual_router_id 51
    priority %d
    advert_int %s
    unicast_src_ip %s
    unicast_peer {
        %s
    }
    virtual_ipaddress {
        %s/24 dev eth0
    }
}
`, h.host.Name, version, h.priority, advert, h.self, h.peer, vipAddr))
			if err != nil {
				return err
			}
			// Foreground, VRRP only, console logs, and pid files of its own so that two
			// instances on one machine do not see each other as already running.
			if _, err := l.start(h.host, "keepalived", "-n", "-l", "-D", "-G", "-P", "-f", conf,
				"-p", filepath.Join(dir, "k.pid"), "-r", filepath.Join(dir, "vrrp.pid"),
				"-c", filepath.Join(dir, "check.pid"), "-b", filepath.Join(dir, "bfd.pid")); err != nil {
				return err
			}
		}
		return nil
	}}
}

// gdnsdSystem: multifo (every up address in each answer) with a tcp_connect monitor.
func gdnsdSystem(settings string, interval, timeout, thresh int) system {
	return system{name: "gdnsd", settings: settings, needs: "gdnsd", start: func(l *lab) error {
		dir := filepath.Join(l.dir, "gdnsd")
		for _, sub := range []string{"run", "state"} {
			if err := os.MkdirAll(filepath.Join(dir, sub), 0o700); err != nil {
				return err
			}
		}
		if _, err := writeFile(dir, "config", fmt.Sprintf(`options => {
  listen => [ %s ]
  run_dir => %s/run
  state_dir => %s/state
  min_ttl => 1
  udp_threads => 1
  tcp_threads => 1
}
service_types => {
  web => {
    plugin => tcp_connect
    port => %d
    interval => %d
    timeout => %d
    up_thresh => %d
    ok_thresh => %d
    down_thresh => %d
  }
}
plugins => {
  multifo => {
    app => {
      service_types => [ web ]
      b1 => %s
      b2 => %s
    }
  }
}
`, dnsAddr, dir, dir, webPort, interval, timeout, thresh, thresh, thresh, b1Addr, b2Addr)); err != nil {
			return err
		}
		if _, err := writeFile(dir, "zones/"+zone, fmt.Sprintf(`$TTL 30
@     SOA ns1 hostmaster ( 1 3600 600 86400 5 )
@     NS  ns1
ns1   A   %s
@     5/1 DYNA multifo!app
`, dnsAddr)); err != nil {
			return err
		}
		p, err := l.start(l.dnsHost, "gdnsd", "-c", dir, "-D", "start")
		if err != nil {
			return err
		}
		return waitAnswering(l, p)
	}}
}

// pdnsSystem: PowerDNS Authoritative, bind backend, a LUA record with ifportup answering every
// up address (selector all).
func pdnsSystem(settings string, interval int, timeout string) system {
	return system{name: "PowerDNS", settings: settings, needs: "pdns_server", start: func(l *lab) error {
		dir := filepath.Join(l.dir, "pdns")
		if err := os.MkdirAll(filepath.Join(dir, "run"), 0o755); err != nil {
			return err
		}
		if _, err := writeFile(dir, "pdns.conf", strings.Join([]string{
			"launch=bind",
			"bind-config=" + dir + "/named.conf",
			"bind-check-interval=0",
			"local-address=" + dnsAddr,
			"local-port=53",
			"socket-dir=" + dir + "/run",
			"daemon=no", "guardian=no", "disable-syslog=yes", "write-pid=no",
			"setuid=", "setgid=", "chroot=",
			"enable-lua-records=yes",
			fmt.Sprintf("lua-health-checks-interval=%d", interval),
			"lua-health-checks-expire-delay=3600",
			// Its caches would serve an answer from before the failover: off, so the figure is
			// the health check's alone.
			"cache-ttl=0", "query-cache-ttl=0", "negquery-cache-ttl=0", "zone-cache-refresh-interval=0",
			"security-poll-suffix=",
			"distributor-threads=1", "receiver-threads=1",
		}, "\n")+"\n"); err != nil {
			return err
		}
		if _, err := writeFile(dir, "named.conf", fmt.Sprintf("options { directory %q; };\nzone %q { type master; file %q; };\n",
			dir, zone, dir+"/zone")); err != nil {
			return err
		}
		if _, err := writeFile(dir, "zone", fmt.Sprintf(`$TTL 30
$ORIGIN %s.
@    IN SOA ns1 hostmaster 1 3600 600 86400 5
@    IN NS  ns1
ns1  IN A   %s
@    1 IN LUA A "ifportup(%d, {'%s','%s'}, {selector='all', timeout='%s'})"
`, zone, dnsAddr, webPort, b1Addr, b2Addr, timeout)); err != nil {
			return err
		}
		p, err := l.start(l.dnsHost, "pdns_server", "--config-dir="+dir)
		if err != nil {
			return err
		}
		if err := waitAnswering(l, p); err != nil {
			return err
		}
		time.Sleep(time.Duration(interval) * time.Second) // the first query only starts the checks
		return nil
	}}
}
