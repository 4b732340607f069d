package main

import (
	"fmt"
	"time"

	"github.com/healthdns/healthdns/test/harness"
	"github.com/healthdns/healthdns/test/netlab"
)

// systems lists what is measured, in table order.
func systems() []system {
	return []system{
		healthdnsSystem("healthdns", "defaults: interval 1s, timeout 500ms, fall 2, rise 2, tcp check", nil),
		healthdnsSystem("healthdns", "tuned: interval 200ms, timeout 100ms, fall 2, rise 2, tcp check",
			[]string{"interval 200ms", "timeout 100ms"}),
		// One address at a time, as a VIP gives: b1 in priority group 200, b2 in the default 100.
		// They fail back at once (the default), so that each trial starts with b1 serving;
		// nopreempt changes only the fail-back, which test/lab's TestActiveStandbyNopreempt shows.
		activeStandby("active/standby (priority 200/100), defaults", nil),
		activeStandby("active/standby (priority 200/100), tuned: interval 200ms, timeout 100ms",
			[]string{"interval 200ms", "timeout 100ms"}),
		activeStandby("active/standby (priority 200/100), interval 1s, timeout 200ms, fast_interval 250ms",
			[]string{"interval 1s", "timeout 200ms", "fast_interval 250ms"}),
		keepalivedSystem("VRRPv2, advert_int 1 (master down after 3×advert + skew)", 2, "1"),
		keepalivedSystem("VRRPv3, advert_int 0.2 (healthdns tuned's interval)", 3, "0.2"),
		gdnsdSystem("fastest: interval 2, timeout 1, up/ok/down_thresh 1", 2, 1, 1),
		gdnsdSystem("interval 2, timeout 1, thresholds 2 (healthdns's rise/fall)", 2, 1, 2),
		// Its fastest: checks run every second at most, and a fractional timeout is truncated to
		// 0, which disables it (a dead host is never marked down).
		pdnsSystem("fastest: lua-health-checks-interval 1 (healthdns's default), ifportup timeout 1", 1, "1"),
	}
}

func healthdnsSystem(name, settings string, lines []string) system {
	return healthdnsPool(name, settings, []string{b1Addr, b2Addr}, append([]string{"answers 2"}, lines...))
}

// activeStandby is a two-group pool: b1 serves alone while it is healthy, b2 takes over.
func activeStandby(settings string, lines []string) system {
	s := healthdnsPool("healthdns", settings, nil, append([]string{"backend " + b1Addr + " priority 200", "backend " + b2Addr}, lines...))
	s.single = true
	return s
}

func healthdnsPool(name, settings string, backends, lines []string) system {
	return system{name: name, settings: settings, start: func(l *lab) error {
		block := harness.Pool(zone, backends, append([]string{fmt.Sprintf("check tcp %d", webPort)}, lines...)...)
		conf, err := writeFile(l.dir, "healthdns/Corefile", fmt.Sprintf(".:53 {\n bind %s\n%s}\n", dnsAddr, block))
		if err != nil {
			return err
		}
		p, err := l.start(l.dnsHost, l.coredns, "-conf", conf)
		if err != nil {
			return err
		}
		return waitAnswering(l, p)
	}}
}

// waitAnswering waits until the DNS host answers for the zone, or the server exits.
func waitAnswering(l *lab, p *netlab.Process) error {
	return p.AwaitReady(10*time.Second, func() bool { return len(l.observe(system{})) > 0 })
}
