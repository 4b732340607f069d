package main

import (
	"fmt"
	"strings"
)

// systems lists what is measured, in table order.
func systems() []system {
	return []system{
		healthdnsSystem("healthdns", "defaults: interval 1s, timeout 500ms, fall 2, rise 2, tcp check", nil),
		healthdnsSystem("healthdns", "tuned: interval 200ms, timeout 100ms, fall 2, rise 2, tcp check",
			[]string{"interval 200ms", "timeout 100ms"}),
	}
}

func healthdnsSystem(name, settings string, lines []string) system {
	return system{name: name, settings: settings, start: func(l *lab) error {
		body := fmt.Sprintf("  backend %s\n  backend %s\n  check tcp %d\n  answers 2\n", b1Addr, b2Addr, webPort)
		for _, line := range lines {
			body += "  " + line + "\n"
		}
		conf, err := writeFile(l.dir, "healthdns/Corefile", fmt.Sprintf(".:53 {\n bind %s\n healthdns %s {\n%s }\n}\n", dnsAddr, zone, body))
		if err != nil {
			return err
		}
		p, err := l.dnsHost.StartProcess(l.coredns, "-conf", conf)
		if err != nil {
			return err
		}
		return waitAnswering(l, p.Exited(), p.Output)
	}}
}

// waitAnswering waits until the DNS host answers for the zone, or the server exits.
func waitAnswering(l *lab, exited <-chan struct{}, output func() string) error {
	for i := 0; i < 200; i++ {
		select {
		case <-exited:
			return fmt.Errorf("the DNS server exited:\n%s", output())
		default:
		}
		if len(l.observe(system{})) > 0 {
			return nil
		}
		sleepPoll()
	}
	return fmt.Errorf("the DNS server does not answer for %s:\n%s", zone, strings.TrimSpace(output()))
}
