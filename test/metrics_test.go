package test

import (
	"fmt"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/healthdns/healthdns/test/harness"
	"github.com/miekg/dns"
)

// TestMetrics checks that every documented series is exported with its labels and sensible
// values. .115 stays up, .116 goes down and comes back (transitions), .117 and ::1 never listen
// (failures, backend_up 0, an IPv6 all-down event).
func TestMetrics(t *testing.T) {
	t.Parallel()
	const up, flap, dead = "127.0.0.115", "127.0.0.116", "127.0.0.117"
	port, bs := harness.StartBackends(t, up, flap)
	s := harness.Start(t, ".:{{PORT}} {\n bind 127.0.0.1\n prometheus {{METRICS}}\n"+
		harness.TCPPool("m.lan", port, "200ms", "150ms", []string{up, flap, dead}, "answers 8")+
		harness.TCPPool("m6.lan", port, "200ms", "150ms", []string{"::1"})+"}\n")
	harness.Eventually(t, 5*time.Second, func() bool { return harness.SameSet(s.Addrs(t, "udp", "m.lan.", dns.TypeA), up, flap) }, "up and flap answered")

	const answered = 5
	for range answered {
		s.Addrs(t, "udp", "m.lan.", dns.TypeA)
	}
	bs[flap].Stop()
	harness.Eventually(t, 5*time.Second, func() bool { return harness.SameSet(s.Addrs(t, "udp", "m.lan.", dns.TypeA), up) }, flap, " down")
	bs[flap].Start()
	harness.Eventually(t, 5*time.Second, func() bool { return slices.Contains(s.Addrs(t, "udp", "m.lan.", dns.TypeA), flap) }, flap, " back")

	m := s.Scrape(t)
	wantLabels := func(t *testing.T, name string, labels ...string) {
		t.Helper()
		found := m.Find(name, nil)
		if len(found) == 0 {
			t.Errorf("%s: not exported", name)
			return
		}
		sort.Strings(labels)
		for _, smp := range found {
			var have []string
			for k := range smp.Labels {
				if k != "le" { // histogram buckets
					have = append(have, k)
				}
			}
			sort.Strings(have)
			if strings.Join(have, ",") != strings.Join(labels, ",") {
				t.Errorf("%s: labels %v, want %v", name, smp.Labels, labels)
				return
			}
		}
	}
	wantValue := func(t *testing.T, name string, labels map[string]string, ok func(float64) bool, what string) {
		t.Helper()
		v, found := m.Value(name, labels)
		if !found || !ok(v) {
			t.Errorf("%s%v = %v (exported: %v), want %s", name, labels, v, found, what)
		}
	}
	atLeast := func(n float64) func(float64) bool { return func(v float64) bool { return v >= n } }
	equal := func(n float64) func(float64) bool { return func(v float64) bool { return v == n } }

	server := "dns://" + s.Addr // bound to 127.0.0.1: CoreDNS names the server so
	t.Run("server", func(t *testing.T) {
		if _, found := m.Value("coredns_dns_requests_total", map[string]string{"server": server}); !found {
			t.Errorf("coredns_dns_requests_total has no server=%q: the label is not CoreDNS's", server)
		}
		for _, name := range []string{"coredns_healthdns_backend_up", "coredns_healthdns_answers_total", "coredns_healthdns_all_down_total"} {
			for _, smp := range m.Find(name, nil) {
				if smp.Labels["server"] != server {
					t.Errorf("%s%v: server %q, want %q", name, smp.Labels, smp.Labels["server"], server)
				}
			}
		}
	})

	t.Run("backend_up", func(t *testing.T) {
		wantLabels(t, "coredns_healthdns_backend_up", "server", "zone", "backend")
		if typ := m.Types["coredns_healthdns_backend_up"]; typ != "gauge" {
			t.Errorf("backend_up is a %q, want a gauge", typ)
		}
		wantValue(t, "coredns_healthdns_backend_up", map[string]string{"zone": "m.lan", "backend": up}, equal(1), "1")
		wantValue(t, "coredns_healthdns_backend_up", map[string]string{"zone": "m.lan", "backend": flap}, equal(1), "1")
		wantValue(t, "coredns_healthdns_backend_up", map[string]string{"zone": "m.lan", "backend": dead}, equal(0), "0")
		wantValue(t, "coredns_healthdns_backend_up", map[string]string{"zone": "m6.lan", "backend": "::1"}, equal(0), "0")
	})

	t.Run("probe_duration_seconds", func(t *testing.T) {
		if typ := m.Types["coredns_healthdns_probe_duration_seconds"]; typ != "histogram" {
			t.Errorf("probe_duration_seconds is a %q, want a histogram", typ)
		}
		wantLabels(t, "coredns_healthdns_probe_duration_seconds_count", "check")
		wantLabels(t, "coredns_healthdns_probe_duration_seconds_bucket", "check")
		var tcp float64
		for _, smp := range m.Find("coredns_healthdns_probe_duration_seconds_count", nil) {
			if strings.Contains(smp.Labels["check"], "tcp") {
				tcp += smp.Value
			}
		}
		if tcp < 5 {
			t.Errorf("probe_duration_seconds_count for tcp = %v, want at least one per backend", tcp)
		}
		// The same check is the same label value in every series, so they join.
		check := "tcp :" + strconv.Itoa(port)
		for _, name := range []string{"coredns_healthdns_probe_duration_seconds_count", "coredns_healthdns_probe_lateness_seconds_count", "coredns_healthdns_probes_total", "coredns_healthdns_transitions_total"} {
			if _, found := m.Value(name, map[string]string{"check": check}); !found {
				t.Errorf("%s has no check=%q: %v", name, check, m.Find(name, nil))
			}
		}
	})

	t.Run("probe_lateness_seconds (README)", func(t *testing.T) {
		if typ := m.Types["coredns_healthdns_probe_lateness_seconds"]; typ != "histogram" {
			t.Errorf("probe_lateness_seconds is a %q, want a histogram", typ)
		}
		wantLabels(t, "coredns_healthdns_probe_lateness_seconds_count", "check")
	})

	t.Run("probes_total", func(t *testing.T) {
		wantLabels(t, "coredns_healthdns_probes_total", "backend", "check", "result")
		for _, smp := range m.Find("coredns_healthdns_probes_total", nil) {
			if r := smp.Labels["result"]; r != "success" && r != "failure" {
				t.Errorf("probes_total result %q", r)
			}
		}
		wantValue(t, "coredns_healthdns_probes_total", map[string]string{"backend": up, "result": "success"}, atLeast(2), ">= 2")
		wantValue(t, "coredns_healthdns_probes_total", map[string]string{"backend": dead, "result": "failure"}, atLeast(2), ">= 2")
		wantValue(t, "coredns_healthdns_probes_total", map[string]string{"backend": flap, "result": "failure"}, atLeast(2), ">= fall")
		if v, found := m.Value("coredns_healthdns_probes_total", map[string]string{"backend": up, "result": "failure"}); found && v > 0 {
			t.Logf("note: %v failed probes of the live backend (a loaded machine can miss a 150ms timeout)", v)
		}
	})

	t.Run("transitions_total", func(t *testing.T) {
		wantLabels(t, "coredns_healthdns_transitions_total", "backend", "check", "to")
		for _, smp := range m.Find("coredns_healthdns_transitions_total", nil) {
			if to := smp.Labels["to"]; to != "up" && to != "down" {
				t.Errorf("transitions_total to %q", to)
			}
		}
		wantValue(t, "coredns_healthdns_transitions_total", map[string]string{"backend": flap, "to": "down"}, equal(1), "1")
		wantValue(t, "coredns_healthdns_transitions_total", map[string]string{"backend": flap, "to": "up"}, equal(1), "1")
	})

	t.Run("all_down_total", func(t *testing.T) {
		wantLabels(t, "coredns_healthdns_all_down_total", "server", "zone", "family")
		for _, smp := range m.Find("coredns_healthdns_all_down_total", nil) {
			if f := smp.Labels["family"]; f != "ipv4" && f != "ipv6" {
				t.Errorf("all_down_total family %q", f)
			}
		}
		wantValue(t, "coredns_healthdns_all_down_total", map[string]string{"zone": "m6.lan", "family": "ipv6"}, equal(1), "1")
		if v, _ := m.Value("coredns_healthdns_all_down_total", map[string]string{"zone": "m.lan"}); v != 0 {
			t.Errorf("all_down_total for m.lan = %v; it never had every backend down", v)
		}
	})

	t.Run("answers_total", func(t *testing.T) {
		wantLabels(t, "coredns_healthdns_answers_total", "server", "zone", "backend")
		wantValue(t, "coredns_healthdns_answers_total", map[string]string{"zone": "m.lan", "backend": up}, atLeast(answered), ">= the queries made")
		if v, found := m.Value("coredns_healthdns_answers_total", map[string]string{"backend": dead}); found && v != 0 {
			t.Errorf("answers_total for the dead %s = %v, want 0", dead, v)
		}
	})
}

// TestMetricsPerServer serves one zone from two server blocks with the same backend, checked on
// an open port by one block and a closed port by the other: each block has its own backend_up
// series, with the server label CoreDNS's own metrics use, and a reload that drops the zone from
// one block deletes only that block's series. It also reads the log lines an operator would.
func TestMetricsPerServer(t *testing.T) {
	t.Parallel()
	const shared, other = "127.0.0.180", "127.0.0.181"
	open, bs := harness.StartBackends(t, shared, other)
	closed := harness.FreePort(t, shared) // nothing listens on shared:closed
	portB := harness.FreePort(t)
	blockB := func(withTwo bool) string {
		b := fmt.Sprintf(".:%d {\n bind 127.0.0.1\n prometheus {{METRICS}}\n", portB)
		if withTwo {
			b += harness.TCPPool("two.lan", closed, "200ms", "100ms", []string{shared})
		}
		return b + harness.TCPPool("other.lan", open, "200ms", "100ms", []string{shared, other}) + "}\n"
	}
	blockA := ".:{{PORT}} {\n bind 127.0.0.1\n prometheus {{METRICS}}\n" + harness.TCPPool("two.lan", open, "200ms", "100ms", []string{shared}) + "}\n"
	s := harness.Start(t, blockA+blockB(true))
	serverA, serverB := "dns://"+s.Addr, fmt.Sprintf("dns://127.0.0.1:%d", portB)

	harness.Eventually(t, 5*time.Second, func() bool { return harness.SameSet(s.Addrs(t, "udp", "two.lan.", dns.TypeA), shared) }, "two.lan. on A")
	c := &dns.Client{Timeout: 2 * time.Second}
	q := new(dns.Msg)
	q.SetQuestion("two.lan.", dns.TypeA)
	if _, _, err := c.Exchange(q, fmt.Sprintf("127.0.0.1:%d", portB)); err != nil {
		t.Fatalf("querying block B: %v", err)
	}

	up := func(m *harness.Metrics, server string) (float64, bool) {
		return m.Value("coredns_healthdns_backend_up", map[string]string{"server": server, "zone": "two.lan.", "backend": shared})
	}
	var m *harness.Metrics
	harness.Eventually(t, 5*time.Second, func() bool {
		m = s.Scrape(t)
		a, okA := up(m, serverA)
		b, okB := up(m, serverB)
		return okA && okB && a == 1 && b == 0
	}, "backend_up 1 on ", serverA, " and 0 on ", serverB)
	for _, server := range []string{serverA, serverB} {
		if _, found := m.Value("coredns_dns_requests_total", map[string]string{"server": server}); !found {
			t.Errorf("coredns_dns_requests_total has no server=%q: the label is not CoreDNS's", server)
		}
	}
	for _, port := range []int{open, closed} {
		check := "tcp :" + strconv.Itoa(port)
		if _, found := m.Value("coredns_healthdns_probes_total", map[string]string{"backend": shared, "check": check}); !found {
			t.Errorf("probes_total has no check=%q for %s", check, shared)
		}
		if _, found := m.Value("coredns_healthdns_probe_duration_seconds_count", map[string]string{"check": check}); !found {
			t.Errorf("probe_duration_seconds has no check=%q, the label of probes_total", check)
		}
	}

	wantLines := func(t *testing.T, out string, lines ...string) {
		t.Helper()
		for _, l := range lines {
			if !slices.Contains(strings.Split(out, "\n"), l) {
				t.Errorf("no log line %q in:\n%s", l, out)
			}
		}
	}
	// Every block's pools start together, so other.lan. of block B may hold the open port's
	// target by the time its first verdict is logged, or not yet.
	firstUp := regexp.MustCompile(fmt.Sprintf(`^\[INFO\] plugin/healthdns: backend %s \((other\.lan\., )?two\.lan\.\): up \(first probe, tcp :%d\)$`, regexp.QuoteMeta(shared), open))
	if len(harness.LinesMatching(s.Output(), firstUp)) != 1 {
		t.Errorf("no log line matching %s in:\n%s", firstUp, s.Output())
	}
	wantLines(t, s.Output(),
		fmt.Sprintf("[WARNING] plugin/healthdns: backend %s (two.lan.): down (first probe): tcp :%d: connection refused", shared, closed),
		"[WARNING] plugin/healthdns: zone two.lan.: every backend is down (1 configured): serving the 1 configured address anyway (all_down serve_all)",
	)

	if err := s.Reload(t, blockA+blockB(false)); err != nil {
		t.Fatal(err)
	}
	harness.Eventually(t, 5*time.Second, func() bool { _, found := up(s.Scrape(t), serverB); return !found }, "block B's two.lan. series to go")
	m = s.Scrape(t)
	if v, found := up(m, serverA); !found || v != 1 {
		t.Errorf("backend_up on %s after the reload = %v (exported: %v), want 1", serverA, v, found)
	}
	if _, found := m.Value("coredns_healthdns_backend_up", map[string]string{"server": serverB, "zone": "other.lan.", "backend": shared}); !found {
		t.Errorf("backend_up of other.lan. on %s went with two.lan.", serverB)
	}

	// One monitor probes shared:open for both zones: its transition names both.
	mark := len(s.Output())
	bs[shared].Stop()
	want := fmt.Sprintf("[WARNING] plugin/healthdns: backend %s (other.lan., two.lan.): down: tcp :%d: connection refused (2/2)", shared, open)
	harness.Eventually(t, 5*time.Second, func() bool { return slices.Contains(strings.Split(s.Output()[mark:], "\n"), want) }, "the log line ", want)
}
