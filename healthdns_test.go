package healthdns

import (
	"context"
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/coredns/coredns/plugin/pkg/dnstest"
	"github.com/coredns/coredns/plugin/pkg/dnsutil"
	"github.com/coredns/coredns/plugin/pkg/fall"
	"github.com/coredns/coredns/plugin/test"
	"github.com/miekg/dns"

	"github.com/healthdns/healthdns/balance"
	"github.com/healthdns/healthdns/health"
)

// deadProber fails for the addresses in its set and succeeds for every other.
type deadProber map[netip.Addr]bool

func (d deadProber) probe(_ context.Context, a netip.Addr) error {
	if d[a] {
		return errors.New("tcp :80: connection refused")
	}
	return nil
}

var dead = deadProber{
	netip.MustParseAddr("10.0.0.3"): true,
	netip.MustParseAddr("10.9.0.1"): true,
	netip.MustParseAddr("10.9.0.2"): true,
}

func testConfig(zone string, backends ...string) poolConfig {
	cfg := poolConfig{
		zone:    zone,
		spec:    health.Spec{Check: health.Check{Kind: health.TCP, Port: 80}, Interval: time.Hour, Timeout: time.Second, Rise: 2, Fall: 2},
		policy:  "round_robin",
		answers: 8,
		ttl:     5,
		nsName:  dnsutil.Join("ns.dns", zone),
		nsAddrs: []netip.Addr{netip.MustParseAddr("127.0.0.53")},
	}
	for _, b := range backends {
		cfg.backends = append(cfg.backends, backend{addr: netip.MustParseAddr(b), weight: 1})
	}
	return cfg
}

// newTestHandler builds the handler as setup does and starts it, with a registry of its own.
func newTestHandler(t testing.TB, cfgs ...poolConfig) *HealthDNS {
	t.Helper()
	reg := health.NewRegistry(observer{}, health.WithProbe(dead.probe))
	h := &HealthDNS{Next: test.NextHandler(dns.RcodeNameError, errNext), pools: map[string]*Pool{}}
	for _, cfg := range cfgs {
		policy, err := balance.New(cfg.policy)
		if err != nil {
			t.Fatal(err)
		}
		p := newPool(cfg, policy, reg)
		p.zone = newZoneRecords(&p.cfg, 1)
		h.pools[cfg.zone] = p
	}
	if h.Ready() {
		t.Fatal("ready before OnStartup")
	}
	if err := h.OnStartup(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.OnShutdown() })
	if !h.Ready() {
		t.Fatal("not ready after OnStartup")
	}
	return h
}

// errNext marks an answer that came from the next plugin.
var errNext = errors.New("answered by the next plugin")

func TestServeDNS(t *testing.T) {
	allDown := func(zone string, mode allDownMode) poolConfig {
		c := testConfig(zone, "10.9.0.1", "10.9.0.2")
		c.allDown = mode
		return c
	}
	fallCfg := testConfig("ft.lan.", "10.0.0.1")
	fallCfg.fall = fall.Root
	h := newTestHandler(t,
		testConfig("app.lan.", "10.0.0.1", "10.0.0.2", "10.0.0.3"),
		testConfig("sub.app.lan.", "10.1.0.1"),
		testConfig("v6.lan.", "2001:db8::1"),
		allDown("open.lan.", allDownServeAll),
		allDown("closed.lan.", allDownServfail),
		allDown("onward.lan.", allDownFallthrough),
		fallCfg,
	)
	soa := func(zone string) dns.RR {
		return test.SOA(zone + " 5 IN SOA ns.dns." + zone + " hostmaster." + zone + " 1 86400 7200 3600000 5")
	}
	cases := []test.Case{
		{Qname: "app.lan.", Qtype: dns.TypeA, Answer: []dns.RR{test.A("app.lan. 5 IN A 10.0.0.1"), test.A("app.lan. 5 IN A 10.0.0.2")}},
		{Qname: "a.b.c.app.lan.", Qtype: dns.TypeA, Answer: []dns.RR{test.A("a.b.c.app.lan. 5 IN A 10.0.0.1"), test.A("a.b.c.app.lan. 5 IN A 10.0.0.2")}},
		{Qname: "WwW.App.LAN.", Qtype: dns.TypeA, Answer: []dns.RR{test.A("WwW.App.LAN. 5 IN A 10.0.0.1"), test.A("WwW.App.LAN. 5 IN A 10.0.0.2")}},
		{Qname: "app.lan.", Qtype: dns.TypeAAAA, Ns: []dns.RR{soa("app.lan.")}},
		{Qname: "x.app.lan.", Qtype: dns.TypeMX, Ns: []dns.RR{soa("app.lan.")}},
		{Qname: "x.app.lan.", Qtype: dns.TypeNS, Ns: []dns.RR{soa("app.lan.")}},
		{Qname: "x.app.lan.", Qtype: dns.TypeSOA, Ns: []dns.RR{soa("app.lan.")}},
		{Qname: "app.lan.", Qtype: dns.TypeSOA, Answer: []dns.RR{soa("app.lan.")}},
		{Qname: "APP.lan.", Qtype: dns.TypeNS, Answer: []dns.RR{test.NS("APP.lan. 5 IN NS ns.dns.app.lan.")}, Extra: []dns.RR{test.A("ns.dns.app.lan. 5 IN A 127.0.0.53")}},
		{Qname: "ns.dns.app.lan.", Qtype: dns.TypeA, Answer: []dns.RR{test.A("ns.dns.app.lan. 5 IN A 127.0.0.53")}},
		{Qname: "ns.dns.app.lan.", Qtype: dns.TypeAAAA, Ns: []dns.RR{soa("app.lan.")}},
		{Qname: "x.sub.app.lan.", Qtype: dns.TypeA, Answer: []dns.RR{test.A("x.sub.app.lan. 5 IN A 10.1.0.1")}},
		{Qname: "sub.app.lan.", Qtype: dns.TypeSOA, Answer: []dns.RR{soa("sub.app.lan.")}},
		{Qname: "v6.lan.", Qtype: dns.TypeAAAA, Answer: []dns.RR{test.AAAA("v6.lan. 5 IN AAAA 2001:db8::1")}},
		{Qname: "v6.lan.", Qtype: dns.TypeA, Ns: []dns.RR{soa("v6.lan.")}},
		{Qname: "x.open.lan.", Qtype: dns.TypeA, Answer: []dns.RR{test.A("x.open.lan. 5 IN A 10.9.0.1"), test.A("x.open.lan. 5 IN A 10.9.0.2")}},
		{Qname: "x.closed.lan.", Qtype: dns.TypeA, Rcode: dns.RcodeServerFailure},
		{Qname: "x.onward.lan.", Qtype: dns.TypeA, Rcode: dns.RcodeNameError, Error: errNext},
		{Qname: "x.ft.lan.", Qtype: dns.TypeTXT, Rcode: dns.RcodeNameError, Error: errNext},
		{Qname: "x.ft.lan.", Qtype: dns.TypeA, Answer: []dns.RR{test.A("x.ft.lan. 5 IN A 10.0.0.1")}},
		{Qname: "other.lan.", Qtype: dns.TypeA, Rcode: dns.RcodeNameError, Error: errNext},
		{Qname: "lan.", Qtype: dns.TypeSOA, Rcode: dns.RcodeNameError, Error: errNext},
		{Qname: "xapp.lan.", Qtype: dns.TypeA, Rcode: dns.RcodeNameError, Error: errNext},
	}
	for _, tc := range cases {
		t.Run(dns.TypeToString[tc.Qtype]+" "+tc.Qname, func(t *testing.T) {
			rec := dnstest.NewRecorder(&test.ResponseWriter{})
			rcode, err := h.ServeDNS(context.Background(), rec, tc.Msg())
			if !errors.Is(err, tc.Error) {
				t.Fatalf("error %v, want %v", err, tc.Error)
			}
			if tc.Error != nil {
				return // the next plugin answered; nothing of ours to check
			}
			if tc.Rcode == dns.RcodeServerFailure {
				if rcode != tc.Rcode || rec.Msg != nil {
					t.Fatalf("rcode %d with written reply %v, want SERVFAIL returned and nothing written", rcode, rec.Msg)
				}
				return
			}
			if rcode != dns.RcodeSuccess || rec.Msg == nil {
				t.Fatalf("rcode %d, reply %v", rcode, rec.Msg)
			}
			if !rec.Msg.Authoritative {
				t.Error("AA not set")
			}
			if err := test.SortAndCheck(rec.Msg, tc); err != nil {
				t.Error(err)
			}
		})
	}
}

func TestServeDNSOtherClassAndShapes(t *testing.T) {
	h := newTestHandler(t, testConfig("app.lan.", "10.0.0.1"))
	chaos := new(dns.Msg)
	chaos.SetQuestion("app.lan.", dns.TypeTXT)
	chaos.Question[0].Qclass = dns.ClassCHAOS
	noQuestion := new(dns.Msg)
	twoQuestions := new(dns.Msg)
	twoQuestions.SetQuestion("app.lan.", dns.TypeA)
	twoQuestions.Question = append(twoQuestions.Question, twoQuestions.Question[0])
	for name, m := range map[string]*dns.Msg{"chaos": chaos, "no question": noQuestion, "two questions": twoQuestions} {
		t.Run(name, func(t *testing.T) {
			rec := dnstest.NewRecorder(&test.ResponseWriter{})
			if _, err := h.ServeDNS(context.Background(), rec, m); !errors.Is(err, errNext) {
				t.Fatalf("error %v: not passed to the next plugin", err)
			}
		})
	}
}

func TestServeDNSRoundRobinCycles(t *testing.T) {
	cfg := testConfig("app.lan.", "10.0.0.1", "10.0.0.2", "10.0.0.4")
	cfg.answers = 1
	h := newTestHandler(t, cfg)
	seen := map[string]int{}
	for range 30 {
		rec := dnstest.NewRecorder(&test.ResponseWriter{})
		m := new(dns.Msg)
		m.SetQuestion("app.lan.", dns.TypeA)
		h.ServeDNS(context.Background(), rec, m)
		if len(rec.Msg.Answer) != 1 {
			t.Fatalf("answers %v", rec.Msg.Answer)
		}
		seen[rec.Msg.Answer[0].(*dns.A).A.String()]++
	}
	if len(seen) != 3 || seen["10.0.0.1"] != 10 || seen["10.0.0.2"] != 10 || seen["10.0.0.4"] != 10 {
		t.Fatalf("round robin over 30 queries: %v", seen)
	}
}

func TestServeDNSAllocations(t *testing.T) {
	cfg := testConfig("app.lan.", "10.0.0.1", "10.0.0.2", "10.0.0.4")
	cfg.answers = 1
	h := newTestHandler(t, cfg)
	m := new(dns.Msg)
	m.SetQuestion("www.app.lan.", dns.TypeA)
	w := &discardWriter{}
	allocs := testing.AllocsPerRun(200, func() { h.ServeDNS(context.Background(), w, m) })
	// The reply message, its question copy, the answer slice and the record block: nothing more.
	if allocs > 4 {
		t.Fatalf("%.1f allocations per query, want at most 4", allocs)
	}
}

// discardWriter is a ResponseWriter that keeps nothing, so benchmarks measure ServeDNS alone.
type discardWriter struct{ test.ResponseWriter }

func (*discardWriter) WriteMsg(*dns.Msg) error { return nil }
