package test

import (
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/healthdns/healthdns/test/harness"
	"github.com/miekg/dns"
)

// TestPriorityGroups runs a primary (priority 200) and a standby (100) under each preemption:
// the primary dies and only the standby is answered; it returns and takes back at once, after
// preempt_delay, or, under nopreempt, only once the standby dies; a primary flapping every 300 ms
// under nopreempt never takes back.
func TestPriorityGroups(t *testing.T) {
	t.Parallel()
	const primary, standby = "127.0.0.241", "127.0.0.242"
	port, bs := harness.StartBackends(t, primary, standby)
	pool := func(zone string, extra ...string) string {
		return harness.Pool(zone, nil, append([]string{
			"backend " + primary + " priority 200", "backend " + standby,
			"check tcp " + strconv.Itoa(port), "interval 100ms", "timeout 50ms", "answers 2",
		}, extra...)...)
	}
	s := harness.Start(t, ".:{{PORT}} {\n bind 127.0.0.1\n prometheus {{METRICS}}\n"+
		pool("preempt.lan")+pool("delay.lan", "preempt_delay 2s")+pool("nopreempt.lan", "nopreempt")+"}\n")
	zones := []string{"preempt.lan.", "delay.lan.", "nopreempt.lan."}
	serves := func(zone, ip string) bool { return harness.SameSet(s.Addrs(t, "udp", zone, dns.TypeA), ip) }
	for _, z := range zones {
		if !serves(z, primary) {
			t.Fatalf("%s at start: %v, want the primary alone", z, s.Addrs(t, "udp", z, dns.TypeA))
		}
	}

	bs[primary].Stop()
	for _, z := range zones {
		harness.Eventually(t, 5*time.Second, func() bool { return serves(z, standby) }, z, " to move to the standby")
	}
	back := time.Now()
	bs[primary].Start()
	harness.Eventually(t, 5*time.Second, func() bool { return serves("preempt.lan.", primary) }, "preempt.lan back on the primary")
	t.Logf("preempt.lan took back %v after the primary listened again", time.Since(back).Round(time.Millisecond))
	if serves("delay.lan.", primary) {
		t.Errorf("delay.lan took back %v after the primary returned, before its preempt_delay of 2s", time.Since(back))
	}
	harness.Eventually(t, 5*time.Second, func() bool { return serves("delay.lan.", primary) }, "delay.lan back after 2s")
	if took := time.Since(back); took < 2*time.Second {
		t.Errorf("delay.lan took back after %v, before its preempt_delay of 2s", took)
	}

	// nopreempt: the standby keeps serving while the primary flaps, and the primary serves only
	// when the standby dies.
	for range 5 {
		time.Sleep(300 * time.Millisecond)
		bs[primary].Stop()
		time.Sleep(300 * time.Millisecond)
		bs[primary].Start()
		if !serves("nopreempt.lan.", standby) {
			t.Fatalf("nopreempt.lan moved back to the flapping primary: %v", s.Addrs(t, "udp", "nopreempt.lan.", dns.TypeA))
		}
	}
	// The primary is healthy again before the standby dies, so the pool never goes all down.
	harness.Eventually(t, 5*time.Second, func() bool {
		v, _ := s.Scrape(t).Value("coredns_healthdns_backend_up", map[string]string{"zone": "nopreempt.lan", "backend": primary})
		return v == 1
	}, "the primary to be up again")
	bs[standby].Stop()
	harness.Eventually(t, 5*time.Second, func() bool { return serves("nopreempt.lan.", primary) }, "nopreempt.lan to the primary once the standby died")

	switches := harness.LinesMatching(s.Output(), harness.IPWord("nopreempt.lan."))
	var moved int
	for _, l := range switches {
		if strings.Contains(l, "now served by priority group") {
			moved++
		}
	}
	if moved != 2 {
		t.Errorf("nopreempt.lan logged %d switches, want 2 (to the standby, back to the primary):\n%s", moved, strings.Join(switches, "\n"))
	}
	m := s.Scrape(t)
	if v, _ := m.Value("coredns_healthdns_serving_priority", map[string]string{"zone": "nopreempt.lan", "family": "ipv4"}); v != 200 {
		t.Errorf("serving_priority of nopreempt.lan = %v, want 200", v)
	}
}

// TestConsistentHashECS: with consistent_hash a client keeps its backend, an ECS subnet keys
// the answer whoever forwards it, and the reply carries the ECS option back with its scope.
func TestConsistentHashECS(t *testing.T) {
	t.Parallel()
	backends := []string{"127.0.0.244", "127.0.0.245", "127.0.0.246", "127.0.0.247"}
	port, _ := harness.StartBackends(t, backends...)
	s := harness.Start(t, ".:{{PORT}} {\n bind 127.0.0.1\n"+
		harness.TCPPool("sticky.lan", port, "200ms", "100ms", backends, "policy consistent_hash", "hash_prefix 24 56")+"}\n")
	ask := func(subnet string, bits uint8) (string, *dns.EDNS0_SUBNET) {
		t.Helper()
		m := new(dns.Msg)
		m.SetQuestion("sticky.lan.", dns.TypeA)
		m.SetEdns0(1232, false)
		m.IsEdns0().Option = append(m.IsEdns0().Option, &dns.EDNS0_SUBNET{
			Code: dns.EDNS0SUBNET, Family: 1, SourceNetmask: bits, Address: net.ParseIP(subnet).To4()})
		r := s.Exchange(t, "udp", m)
		got := harness.AnswerAddrs(r)
		if len(got) != 1 {
			t.Fatalf("ECS %s/%d: %v", subnet, bits, got)
		}
		var ecs *dns.EDNS0_SUBNET
		if opt := r.IsEdns0(); opt != nil {
			for _, o := range opt.Option {
				if e, ok := o.(*dns.EDNS0_SUBNET); ok {
					ecs = e
				}
			}
		}
		return got[0], ecs
	}
	seen := map[string]bool{}
	for i := range 32 {
		subnet := "198.18." + strconv.Itoa(i) + ".0"
		first, ecs := ask(subnet, 24)
		for range 3 {
			if again, _ := ask(subnet, 24); again != first {
				t.Fatalf("subnet %s/24 got %s, then %s", subnet, first, again)
			}
		}
		if ecs == nil || ecs.SourceScope != 24 || ecs.SourceNetmask != 24 {
			t.Fatalf("reply's ECS %+v, want the query's with SCOPE 24", ecs)
		}
		seen[first] = true
	}
	if len(seen) < 3 {
		t.Errorf("32 subnets reached only %d of 4 backends: %v", len(seen), seen)
	}
	if _, ecs := ask("198.18.0.0", 16); ecs == nil || ecs.SourceScope != 16 {
		t.Errorf("a /16 ECS below hash_prefix 24: scope %+v, want 16", ecs)
	}
}

// TestNopreemptAcrossReload: under nopreempt the standby that took over keeps serving across a
// Corefile reload that keeps the pool's backends and priorities, even with the primary healthy
// again; a reload that changes them starts afresh, with the highest group.
func TestNopreemptAcrossReload(t *testing.T) {
	t.Parallel()
	const primary, standby = "127.0.0.248", "127.0.0.249"
	port, bs := harness.StartBackends(t, primary, standby)
	conf := func(standbyPriority int, extra ...string) string {
		return ".:{{PORT}} {\n bind 127.0.0.1\n prometheus {{METRICS}}\n" + harness.Pool("ha.lan", nil, append([]string{
			"backend " + primary + " priority 200", "backend " + standby + " priority " + strconv.Itoa(standbyPriority),
			"check tcp " + strconv.Itoa(port), "interval 100ms", "timeout 50ms", "nopreempt",
		}, extra...)...) + "}\n"
	}
	s := harness.Start(t, conf(100))
	serves := func(ip string) bool { return harness.SameSet(s.Addrs(t, "udp", "ha.lan.", dns.TypeA), ip) }
	if !serves(primary) {
		t.Fatalf("at start: %v, want the primary", s.Addrs(t, "udp", "ha.lan.", dns.TypeA))
	}
	bs[primary].Stop()
	harness.Eventually(t, 5*time.Second, func() bool { return serves(standby) }, "the standby to take over")
	bs[primary].Start()
	harness.Eventually(t, 5*time.Second, func() bool {
		v, _ := s.Scrape(t).Value("coredns_healthdns_backend_up", map[string]string{"zone": "ha.lan", "backend": primary})
		return v == 1
	}, "the primary to be up again")

	if err := s.Reload(t, conf(100, "ttl 3")); err != nil { // same backends and priorities
		t.Fatal(err)
	}
	for range 10 {
		if !serves(standby) {
			t.Fatalf("after a reload that kept the backends: %v, want the standby still (nopreempt)", s.Addrs(t, "udp", "ha.lan.", dns.TypeA))
		}
		time.Sleep(50 * time.Millisecond)
	}

	if err := s.Reload(t, conf(150)); err != nil { // the standby's priority changes
		t.Fatal(err)
	}
	harness.Eventually(t, 5*time.Second, func() bool { return serves(primary) }, "a reload that changed the priorities to start afresh, on the primary")
}
