package test

import (
	"fmt"
	"net"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/healthdns/healthdns/test/harness"
	"github.com/miekg/dns"
)

// TestReload reloads the binary with SIGUSR1 while a client queries without pause: every query
// is answered, an added backend appears, a removed one disappears (with its backend_up series),
// and goroutines do not grow across reloads.
func TestReload(t *testing.T) {
	t.Parallel()
	const a, b, c = "127.0.0.111", "127.0.0.112", "127.0.0.113"
	port, _ := harness.StartBackends(t, a, b, c)
	conf := func(backends ...string) string {
		return ".:{{PORT}} {\n bind 127.0.0.1\n prometheus {{METRICS}}\n" +
			harness.TCPPool("reload.lan", port, "200ms", "100ms", backends, "answers 8") + "}\n"
	}
	s := harness.Start(t, conf(a, b))
	harness.Eventually(t, 5*time.Second, func() bool { return harness.SameSet(s.Addrs(t, "udp", "reload.lan.", dns.TypeA), a, b) },
		"both backends up")

	// Clients that never pause: every reply must carry addresses, at once. The transport is
	// another matter: a TCP connection the old instance accepted as it stopped is closed under
	// the client (EOF, reset) or, on a loaded machine, left unanswered until the client's
	// timeout. That is CoreDNS's handover, not healthdns, and a client retries it, so a query
	// fails on a transport error only when two retries fail too. Retried queries are logged.
	const tries = 3
	var queries, failures atomic.Int64
	transient := map[string]*atomic.Int64{"udp": {}, "tcp": {}}
	var firstFailure, firstTransient atomic.Value
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for _, proto := range []string{"udp", "tcp"} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cl := &dns.Client{Net: proto, Timeout: time.Second}
			m := new(dns.Msg)
			m.SetQuestion("reload.lan.", dns.TypeA)
			for {
				select {
				case <-stop:
					return
				default:
				}
				queries.Add(1)
				for try := 1; ; try++ {
					r, _, err := cl.Exchange(m, s.Addr)
					if err == nil && (r.Rcode != dns.RcodeSuccess || len(r.Answer) == 0) {
						failures.Add(1) // an answer, and a wrong one: no retry makes that right
						firstFailure.CompareAndSwap(nil, proto+": "+errReply(r).Error())
						break
					}
					if err == nil {
						break
					}
					if try < tries {
						transient[proto].Add(1)
						firstTransient.CompareAndSwap(nil, proto+": "+err.Error())
						continue
					}
					failures.Add(1)
					firstFailure.CompareAndSwap(nil, fmt.Sprintf("%s: %d tries: %v", proto, tries, err))
					break
				}
				time.Sleep(2 * time.Millisecond)
			}
		}()
	}
	stopClients := func() {
		select {
		case <-stop:
		default:
			close(stop)
			wg.Wait()
		}
	}
	t.Cleanup(stopClients)

	mark := len(s.Output())

	t.Run("added backend appears", func(t *testing.T) {
		if err := s.Reload(t, conf(a, b, c)); err != nil {
			t.Fatal(err)
		}
		harness.Eventually(t, 3*time.Second, func() bool { return harness.SameSet(s.Addrs(t, "udp", "reload.lan.", dns.TypeA), a, b, c) },
			"the added backend to be answered")
		line := "reload: zone reload.lan. (dns://127.0.0.1:" + s.Addr[strings.LastIndexByte(s.Addr, ':')+1:] + "): backends added " + c
		harness.Eventually(t, 5*time.Second, func() bool { return strings.Contains(s.Output()[mark:], line) }, "the reload's line: ", line)
	})

	t.Run("removed backend disappears", func(t *testing.T) {
		if err := s.Reload(t, conf(a, c)); err != nil {
			t.Fatal(err)
		}
		harness.Eventually(t, 3*time.Second, func() bool { return harness.SameSet(s.Addrs(t, "udp", "reload.lan.", dns.TypeA), a, c) },
			"the removed backend to leave the answers")
		line := "reload: zone reload.lan. (dns://127.0.0.1:" + s.Addr[strings.LastIndexByte(s.Addr, ':')+1:] + "): backends removed " + b
		harness.Eventually(t, 5*time.Second, func() bool { return strings.Contains(s.Output()[mark:], line) }, "the reload's line: ", line)
		for range 20 {
			if got := s.Addrs(t, "tcp", "reload.lan.", dns.TypeA); !harness.SameSet(got, a, c) {
				t.Fatalf("after removing %s: %v", b, got)
			}
		}
		m := s.Scrape(t)
		for _, name := range []string{"backend_up", "answers_total", "probes_total", "transitions_total"} {
			if found := m.Find("coredns_healthdns_"+name, map[string]string{"backend": b}); len(found) != 0 {
				t.Errorf("the removed backend's %s series is still exported: %v", name, found)
			}
		}
		if v, ok := m.Value("coredns_healthdns_backend_up", map[string]string{"backend": a, "zone": "reload.lan"}); !ok || v != 1 {
			t.Errorf("backend_up of a kept backend: %v (found %v), want 1", v, ok)
		}
	})

	t.Run("goroutines do not grow across 5 reloads", func(t *testing.T) {
		if err := s.Reload(t, conf(a, b)); err != nil {
			t.Fatal(err)
		}
		harness.Eventually(t, 3*time.Second, func() bool { return harness.SameSet(s.Addrs(t, "udp", "reload.lan.", dns.TypeA), a, b) }, "a, b")
		before := goroutines(t, s)
		for i := range 5 {
			next := conf(a, b, c) // add one, then remove it: back where we started after each pair
			if i%2 == 1 {
				next = conf(a, b)
			}
			if err := s.Reload(t, next); err != nil {
				t.Fatal(err)
			}
		}
		if err := s.Reload(t, conf(a, b)); err != nil {
			t.Fatal(err)
		}
		harness.Eventually(t, 3*time.Second, func() bool { return harness.SameSet(s.Addrs(t, "udp", "reload.lan.", dns.TypeA), a, b) }, "a, b")
		// Goroutines of a stopped instance wind down asynchronously (closed listeners, timers):
		// give them a moment, and allow a little noise from the runtime and the HTTP server.
		const slack = 8
		var after float64
		deadline := time.Now().Add(5 * time.Second)
		for {
			after = goroutines(t, s)
			if after <= before+slack || time.Now().After(deadline) {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		t.Logf("go_goroutines: %v before 5 reloads, %v after", before, after)
		if after > before+slack {
			t.Errorf("go_goroutines grew from %v to %v across 5 reloads", before, after)
		}
	})

	// a is configured throughout: every reload adopts its running probe loop (docs/DESIGN.md,
	// "a reload starts nothing cold"), so nothing new is logged about it.
	if lines := harness.LinesMatching(s.Output()[mark:], harness.IPWord(a)); len(lines) != 0 {
		t.Errorf("a backend kept across reloads was logged again (probed cold?): %q", lines)
	}

	stopClients()
	t.Logf("%d queries during the reloads, %d failed; tries that failed and were retried: udp %d, tcp %d (first: %v)",
		queries.Load(), failures.Load(), transient["udp"].Load(), transient["tcp"].Load(), firstTransient.Load())
	if failures.Load() != 0 {
		t.Errorf("%d of %d queries failed during reloads; first: %v", failures.Load(), queries.Load(), firstFailure.Load())
	}
	if queries.Load() < 100 {
		t.Errorf("only %d queries were made during the reloads", queries.Load())
	}
	if !s.Alive() {
		t.Fatal("coredns exited")
	}
}

// TestReloadBad reloads onto a broken Corefile: the reload fails and the running configuration
// keeps answering.
func TestReloadBad(t *testing.T) {
	t.Parallel()
	port, _ := harness.StartBackends(t, "127.0.0.114")
	good := ".:{{PORT}} {\n bind 127.0.0.1\n" + harness.TCPPool("bad.lan", port, "200ms", "100ms", []string{"127.0.0.114"}) + "}\n"
	s := harness.Start(t, good)
	err := s.Reload(t, ".:{{PORT}} {\n bind 127.0.0.1\n healthdns bad.lan {\n  backend 127.0.0.300\n }\n}\n")
	if err == nil {
		t.Fatal("a reload onto an invalid backend address succeeded")
	}
	t.Logf("failed reload: %v", err)
	if !strings.Contains(err.Error(), "127.0.0.300") {
		t.Errorf("the reload error does not name the bad address: %v", err)
	}
	for _, proto := range []string{"udp", "tcp"} {
		if got := s.Addrs(t, proto, "bad.lan.", dns.TypeA); !harness.SameSet(got, "127.0.0.114") {
			t.Errorf("%s after a failed reload: %v", proto, got)
		}
	}
	// And a good reload after the bad one still works.
	if err := s.Reload(t, good); err != nil {
		t.Fatalf("reload after a failed one: %v", err)
	}
	if got := s.Addrs(t, "udp", "bad.lan.", dns.TypeA); !harness.SameSet(got, "127.0.0.114") {
		t.Errorf("after a good reload: %v", got)
	}
}

// TestReloadFailsAfterStartup reloads onto a Corefile that parses but cannot start: a second
// server block on a port the test holds. caddy runs the new instance's OnStartup, fails to bind,
// and discards it without OnShutdown (docs/DESIGN.md, "Reload, precisely"). The old configuration
// must keep answering, and the backend only the discarded instance named must not keep being
// probed.
func TestReloadFailsAfterStartup(t *testing.T) {
	t.Parallel()
	const kept, added = "127.0.0.122", "127.0.0.123"
	port, _ := harness.StartBackends(t, kept, added)
	pool := func(backends ...string) string {
		return harness.TCPPool("rf.lan", port, "100ms", "50ms", backends, "answers 8")
	}
	good := ".:{{PORT}} {\n bind 127.0.0.1\n prometheus {{METRICS}}\n" + pool(kept) + "}\n"
	s := harness.Start(t, good)

	// Hold a port for both protocols, without SO_REUSEPORT, so coredns cannot bind it.
	blocked := harness.FreePort(t)
	tl, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", fmt.Sprint(blocked)))
	if err != nil {
		t.Fatal(err)
	}
	defer tl.Close()
	ul, err := net.ListenPacket("udp", net.JoinHostPort("127.0.0.1", fmt.Sprint(blocked)))
	if err != nil {
		t.Fatal(err)
	}
	defer ul.Close()

	before := goroutines(t, s)
	bad := ".:{{PORT}} {\n bind 127.0.0.1\n prometheus {{METRICS}}\n" + pool(kept, added) + "}\n" +
		fmt.Sprintf(".:%d {\n bind 127.0.0.1\n whoami\n}\n", blocked)
	err = s.Reload(t, bad)
	if err == nil {
		t.Fatal("a reload onto a blocked port succeeded")
	}
	t.Logf("failed reload: %v", err)
	t.Logf("log lines about %s from the discarded instance: %q", added, harness.LinesMatching(s.Output(), harness.IPWord(added)))

	for _, proto := range []string{"udp", "tcp"} {
		if got := s.Addrs(t, proto, "rf.lan.", dns.TypeA); !harness.SameSet(got, kept) {
			t.Errorf("%s after the failed reload: %v, want the old configuration's %s", proto, got, kept)
		}
	}

	// With interval 100ms a loop left running probes ten times a second. Nothing to wait for
	// here but time: the absence of probes can only be seen by watching for a while.
	probes := func() float64 {
		v, _ := s.Scrape(t).Value("coredns_healthdns_probes_total", map[string]string{"backend": added})
		return v
	}
	p1 := probes()
	time.Sleep(time.Second)
	if p2 := probes(); p2 > p1 {
		t.Errorf("%s, named only by the discarded instance, is still probed: probes_total %v then %v a second later", added, p1, p2)
	}
	var after float64
	deadline := time.Now().Add(3 * time.Second)
	for {
		after = goroutines(t, s)
		if after <= before+8 || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("go_goroutines: %v before the failed reload, %v after", before, after)
	if after > before+8 {
		t.Errorf("go_goroutines grew from %v to %v across a failed reload", before, after)
	}

	// A good reload afterwards still works and picks the added backend up.
	if err := s.Reload(t, ".:{{PORT}} {\n bind 127.0.0.1\n prometheus {{METRICS}}\n"+pool(kept, added)+"}\n"); err != nil {
		t.Fatalf("reload after a failed one: %v", err)
	}
	harness.Eventually(t, 3*time.Second, func() bool { return harness.SameSet(s.Addrs(t, "udp", "rf.lan.", dns.TypeA), kept, added) },
		"the added backend after a good reload")
}

func goroutines(t *testing.T, s *harness.Server) float64 {
	t.Helper()
	v, ok := s.Scrape(t).Value("go_goroutines", nil)
	if !ok {
		t.Fatal("no go_goroutines in /metrics")
	}
	return v
}

func errReply(r *dns.Msg) error {
	return fmt.Errorf("rcode %s, %d answers", dns.RcodeToString[r.Rcode], len(r.Answer))
}

// TestReloadFailedLeavesNothing reloads five times onto Corefiles that parse but cannot start (a
// second server block binding an address the host lacks, or a port the test holds), with a zone
// of their own and a backend the running configuration lacks. The discarded instances must leave
// nothing behind: a real outage afterwards is counted and logged once, the zone only they named
// has no series, a backend a later good reload drops has no backend_up, and goroutines do not
// grow.
func TestReloadFailedLeavesNothing(t *testing.T) {
	t.Parallel()
	const a, b, onlyBad = "127.0.0.160", "127.0.0.161", "127.0.0.162"
	port, backends := harness.StartBackends(t, a, b) // nothing listens on onlyBad:port
	const zone, badZone = "leftover.lan", "neverserved.lan"
	conf := func(backends ...string) string {
		return ".:{{PORT}} {\n bind 127.0.0.1\n prometheus {{METRICS}}\n" +
			harness.TCPPool(zone, port, "200ms", "100ms", backends, "answers 8", "rise 1", "fall 1") + "}\n"
	}
	s := harness.Start(t, conf(a, b))
	harness.Eventually(t, 5*time.Second, func() bool { return harness.SameSet(s.Addrs(t, "udp", zone+".", dns.TypeA), a, b) }, "a, b")

	unbindable := []string{
		fmt.Sprintf(".:%d {\n bind 127.0.0.1\n whoami\n}\n", holdPort(t)),
		".:53 {\n bind 192.0.2.1\n whoami\n}\n", // TEST-NET-1: no host has it
	}
	before := goroutines(t, s)
	for i := range 5 {
		bad := strings.TrimSuffix(conf(a, b), "}\n") +
			harness.TCPPool(badZone, port, "200ms", "100ms", []string{onlyBad}) + "}\n" + unbindable[i%2]
		if err := s.Reload(t, bad); err == nil {
			t.Fatalf("reload %d onto an address coredns cannot bind succeeded", i+1)
		}
	}

	allDown := func() float64 {
		v, _ := s.Scrape(t).Value("coredns_healthdns_all_down_total", map[string]string{"zone": zone, "family": "ipv4"})
		return v
	}
	// outage stops ips and waits until every pool subscribed to their monitors has heard. A
	// monitor notifies its subscribers under its lock, before it records its next probe: once a
	// later failure of each is counted, every pool that was to hear of the outage has.
	outage := func(ips ...string) (counted float64, logged []string) {
		t.Helper()
		failures := func(ip string) float64 {
			v, _ := s.Scrape(t).Value("coredns_healthdns_probes_total", map[string]string{"backend": ip, "result": "failure"})
			return v
		}
		downBefore := allDown()
		mark := len(s.Output())
		for _, ip := range ips {
			backends[ip].Stop()
		}
		harness.Eventually(t, 5*time.Second, func() bool { return allDown() > downBefore }, "all_down_total to count the outage")
		for _, ip := range ips {
			seen := failures(ip)
			harness.Eventually(t, 5*time.Second, func() bool { return failures(ip) > seen }, ip, "'s next probe")
		}
		logged = harness.LinesMatching(s.Output()[mark:], regexp.MustCompile(regexp.QuoteMeta(zone)), regexp.MustCompile(`(?i)every|all.down`))
		counted = allDown() - downBefore
		for _, ip := range ips {
			backends[ip].Start()
		}
		// Up again, by the metric: with all_down serve_all the answers hold them while down too.
		harness.Eventually(t, 5*time.Second, func() bool {
			m := s.Scrape(t)
			for _, ip := range ips {
				if v, ok := m.Value("coredns_healthdns_backend_up", map[string]string{"zone": zone, "backend": ip}); !ok || v != 1 {
					return false
				}
			}
			return true
		}, ips, " up again")
		return counted, logged
	}

	if counted, logged := outage(a, b); counted != 1 || len(logged) != 1 {
		t.Errorf("one outage after 5 failed reloads: all_down_total +%v, logged %d times (want once): %q", counted, len(logged), logged)
	}

	if err := s.Reload(t, conf(a)); err != nil {
		t.Fatal(err)
	}
	harness.Eventually(t, 5*time.Second, func() bool { return harness.SameSet(s.Addrs(t, "udp", zone+".", dns.TypeA), a) }, "only a after dropping b")
	outage(a) // a transition of a kept backend: a pool still listening would write b's series again

	m := s.Scrape(t)
	if found := m.Find("coredns_healthdns_backend_up", map[string]string{"backend": b}); len(found) != 0 {
		t.Errorf("%s, dropped by a good reload, is still exported: %v", b, found)
	}
	for _, sm := range m.Samples {
		if strings.HasPrefix(sm.Name, "coredns_healthdns_") && (sm.Matches(map[string]string{"zone": badZone}) || sm.Labels["backend"] == onlyBad) {
			t.Errorf("a series of what only the discarded instances named: %s %v", sm.Name, sm.Labels)
		}
	}

	var after float64
	deadline := time.Now().Add(3 * time.Second)
	for {
		after = goroutines(t, s)
		if after <= before+3 || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("go_goroutines: %v before 5 failed reloads, %v after", before, after)
	if after > before+3 {
		t.Errorf("go_goroutines grew from %v to %v across 5 failed reloads", before, after)
	}
}

// holdPort holds a port on 127.0.0.1 for both protocols, without SO_REUSEPORT, so that coredns
// cannot bind it, until the test ends.
func holdPort(t *testing.T) int {
	t.Helper()
	port := harness.FreePort(t)
	tl, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", fmt.Sprint(port)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tl.Close() })
	ul, err := net.ListenPacket("udp", net.JoinHostPort("127.0.0.1", fmt.Sprint(port)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ul.Close() })
	return port
}
