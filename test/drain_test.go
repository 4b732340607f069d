package test

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/healthdns/healthdns/test/harness"
)

// TestDrain drains a healthy backend until a few seconds after startup: it is probed but not
// answered, its gauge says so, and when the time comes it is answered again, without waiting
// for a probe (the interval is an hour), and the log says the drain ended.
func TestDrain(t *testing.T) {
	t.Parallel()
	const drained, live = "127.0.1.200", "127.0.1.201"
	port, _ := harness.StartBackends(t, drained, live)
	until := time.Now().Add(6 * time.Second).UTC().Truncate(time.Second)
	s := harness.Start(t, ".:{{PORT}} {\n bind 127.0.0.1\n prometheus {{METRICS}}\n"+
		harness.Pool("drain.lan", nil,
			"backend "+drained+" drain until "+until.Format(time.RFC3339)+" disk swap",
			"backend "+live,
			"check tcp "+strconv.Itoa(port), "interval 1h", "timeout 200ms", "answers 2")+"}\n")
	serves := func(ips ...string) bool { return harness.SameSet(s.Addrs(t, "udp", "drain.lan.", dns.TypeA), ips...) }
	drainedGauge := func() float64 {
		v, _ := s.Scrape(t).Value("coredns_healthdns_backend_drained", map[string]string{"zone": "drain.lan", "backend": drained})
		return v
	}

	if !serves(live) {
		t.Fatalf("while drained: %v, want %s alone", s.Addrs(t, "udp", "drain.lan.", dns.TypeA), live)
	}
	if g := drainedGauge(); g != 1 {
		t.Errorf("backend_drained of %s = %v while drained, want 1", drained, g)
	}
	if time.Now().After(until) {
		t.Fatalf("the server took until after the drain's end (%s) to start; the drained state was not seen in time", until)
	}
	started := harness.LinesMatching(s.Output(), harness.IPWord(drained))
	if !anyContains(started, "drained until "+until.Format(time.RFC3339)+", probed but not answered (disk swap)") {
		t.Errorf("no startup line for the drain of %s in:\n%s", drained, strings.Join(started, "\n"))
	}

	harness.Eventually(t, 15*time.Second, func() bool { return serves(drained, live) }, "the drained backend to be answered after ", until)
	if time.Now().Before(until) {
		t.Errorf("the drained backend was answered before its drain ended at %s", until)
	}
	if g := drainedGauge(); g != 0 {
		t.Errorf("backend_drained of %s = %v after the drain ended, want 0", drained, g)
	}
	ended := harness.LinesMatching(s.Output(), harness.IPWord(drained))
	if !anyContains(ended, "drain ended at "+until.Format(time.RFC3339)+"; answered again while healthy (disk swap)") {
		t.Errorf("no line for the end of the drain of %s in:\n%s", drained, strings.Join(ended, "\n"))
	}
}

// anyContains reports whether one of lines contains text.
func anyContains(lines []string, text string) bool {
	for _, l := range lines {
		if strings.Contains(l, text) {
			return true
		}
	}
	return false
}
