package healthdns

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/coredns/coredns/plugin/file"
	"github.com/coredns/coredns/plugin/pkg/dnstest"
	"github.com/coredns/coredns/plugin/pkg/dnsutil"
	"github.com/coredns/coredns/plugin/pkg/fall"
	"github.com/coredns/coredns/plugin/test"
	"github.com/miekg/dns"

	"github.com/healthdns/healthdns/balance"
	"github.com/healthdns/healthdns/health"
	"github.com/healthdns/healthdns/pool"
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
	netip.MustParseAddr("10.0.0.3"):    true,
	netip.MustParseAddr("10.9.0.1"):    true,
	netip.MustParseAddr("10.9.0.2"):    true,
	netip.MustParseAddr("2001:db8::9"): true,
}

func testConfig(zone string, backends ...string) poolConfig {
	cfg := poolConfig{
		Config: pool.Config{
			Zone:   zone,
			Spec:   health.Spec{Interval: time.Hour, Timeout: time.Second, Rise: 2, Fall: 2},
			Checks: []health.Check{{Kind: health.TCP, Port: 80}},
			Policy: "round_robin",
		},
		answers: 8,
		ttl:     5,
		nsName:  dnsutil.Join("ns.dns", zone),
		nsAddrs: []netip.Addr{netip.MustParseAddr("127.0.0.53")},
	}
	for _, b := range backends {
		cfg.Backends = append(cfg.Backends, pool.Backend{Addr: netip.MustParseAddr(b), Weight: 1, Priority: balance.DefaultPriority})
	}
	return cfg
}

// newTestHandler builds the handler as setup does and starts it, with a registry of its own.
func newTestHandler(t testing.TB, cfgs ...poolConfig) *HealthDNS {
	t.Helper()
	reg := health.NewRegistry(observer{}, health.WithProbe(dead.probe))
	h := &HealthDNS{Next: test.NextHandler(dns.RcodeNameError, errNext), pools: map[string]*zonePool{}}
	for _, cfg := range cfgs {
		if _, err := balance.New(cfg.Policy); err != nil {
			t.Fatal(err)
		}
		p := newZonePool(cfg, reg)
		p.zone = newZoneRecords(&p.cfg, 1)
		h.pools[cfg.Zone] = p
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
	allDown := func(zone string, mode pool.AllDownMode) poolConfig {
		c := testConfig(zone, "10.9.0.1", "10.9.0.2")
		c.AllDown = mode
		return c
	}
	fallCfg := testConfig("ft.lan.", "10.0.0.1")
	fallCfg.fall = fall.Root
	h := newTestHandler(t,
		testConfig("app.lan.", "10.0.0.1", "10.0.0.2", "10.0.0.3"),
		testConfig("sub.app.lan.", "10.1.0.1"),
		testConfig("v6.lan.", "2001:db8::1"),
		allDown("open.lan.", pool.AllDownServeAll),
		allDown("closed.lan.", pool.AllDownServfail),
		allDown("onward.lan.", pool.AllDownFallthrough),
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
	runCases(t, h, cases)
}

// runCases runs each case through h. A case with an Error expects the query passed on to the
// next plugin (test.NextHandler) and nothing of healthdns's written; a SERVFAIL case expects
// the rcode returned and nothing written; every other case expects the reply tc describes.
func runCases(t *testing.T, h *HealthDNS, cases []test.Case) {
	t.Helper()
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
			if !rec.Msg.Authoritative && rec.Msg.Rcode != dns.RcodeRefused {
				t.Error("AA not set")
			}
			if err := test.SortAndCheck(rec.Msg, tc); err != nil {
				t.Error(err)
			}
		})
	}
}

// TestServeDNSAllDownIsPoolWide: all_down applies only when no backend of the pool, of either
// family, is up. A family whose backends are all down beside a live one gets NODATA in every
// mode, so a dual-stack client resolves the name and reaches the live family.
func TestServeDNSAllDownIsPoolWide(t *testing.T) {
	modes := []pool.AllDownMode{pool.AllDownServeAll, pool.AllDownServfail, pool.AllDownFallthrough}
	var cfgs []poolConfig
	var cases []test.Case
	soa := func(zone string) dns.RR {
		return test.SOA(zone + " 5 IN SOA ns.dns." + zone + " hostmaster." + zone + " 1 86400 7200 3600000 5")
	}
	for _, mode := range modes {
		half := "half-" + mode.String() + ".lan." // IPv4 dead, IPv6 up
		gone := "gone-" + mode.String() + ".lan." // both dead
		for zone, backends := range map[string][]string{half: {"10.9.0.1", "2001:db8::1"}, gone: {"10.9.0.1", "10.9.0.2", "2001:db8::9"}} {
			c := testConfig(zone, backends...)
			c.AllDown = mode
			cfgs = append(cfgs, c)
		}
		cases = append(cases,
			test.Case{Qname: "x." + half, Qtype: dns.TypeA, Ns: []dns.RR{soa(half)}},
			test.Case{Qname: "x." + half, Qtype: dns.TypeAAAA, Answer: []dns.RR{test.AAAA("x." + half + " 5 IN AAAA 2001:db8::1")}},
		)
		for _, qtype := range []uint16{dns.TypeA, dns.TypeAAAA} {
			c := test.Case{Qname: "x." + gone, Qtype: qtype}
			switch mode {
			case pool.AllDownServeAll:
				if qtype == dns.TypeA {
					c.Answer = []dns.RR{test.A("x." + gone + " 5 IN A 10.9.0.1"), test.A("x." + gone + " 5 IN A 10.9.0.2")}
				} else {
					c.Answer = []dns.RR{test.AAAA("x." + gone + " 5 IN AAAA 2001:db8::9")}
				}
			case pool.AllDownServfail:
				c.Rcode = dns.RcodeServerFailure
			case pool.AllDownFallthrough:
				c.Rcode, c.Error = dns.RcodeNameError, errNext
			}
			cases = append(cases, c)
		}
	}
	h := newTestHandler(t, cfgs...)
	runCases(t, h, cases)
}

// TestServeDNSAnyAndTransfers: ANY gets RFC 8482's HINFO, and zone transfers are refused with a
// reply, with or without fallthrough (a zone file behind healthdns would list addresses that
// healthdns does not answer).
func TestServeDNSAnyAndTransfers(t *testing.T) {
	ft := testConfig("ft.lan.", "10.0.0.1")
	ft.fall = fall.Root
	h := newTestHandler(t, testConfig("app.lan.", "10.0.0.1"), ft)
	var cases []test.Case
	for _, name := range []string{"app.lan.", "X.App.Lan.", "ft.lan.", "x.ft.lan."} {
		cases = append(cases, test.Case{Qname: name, Qtype: dns.TypeANY, Answer: []dns.RR{test.HINFO(name + ` 5 IN HINFO "RFC8482" ""`)}})
	}
	for _, name := range []string{"app.lan.", "x.app.lan.", "ft.lan."} {
		cases = append(cases,
			test.Case{Qname: name, Qtype: dns.TypeAXFR, Rcode: dns.RcodeRefused},
			test.Case{Qname: name, Qtype: dns.TypeIXFR, Rcode: dns.RcodeRefused},
		)
	}
	runCases(t, h, cases)
}

// appLanDB is the zone file of TestServeDNSBesideZoneFile: its SOA differs from healthdns's in
// every field.
const appLanDB = `$ORIGIN app.lan.
@      3600 IN SOA  ns1.app.lan. admin.app.lan. 2024010101 7200 3600 1209600 300
@      3600 IN NS   ns1.app.lan.
@      3600 IN MX   10 mail.app.lan.
ns1    3600 IN A    10.0.0.53
mail   3600 IN A    10.0.0.25
x      3600 IN TXT  "from-file"
`

const downLanDB = `$ORIGIN down.lan.
@      3600 IN SOA  ns1.down.lan. admin.down.lan. 7 7200 3600 1209600 300
@      3600 IN NS   ns1.down.lan.
static 3600 IN A    10.0.9.9
`

// TestServeDNSBesideZoneFile runs healthdns in front of a real file plugin that serves the same
// zone, with fallthrough: the zone file owns the zone's SOA and NS, and a name whose addresses
// healthdns answers never gets NXDOMAIN for another type.
func TestServeDNSBesideZoneFile(t *testing.T) {
	app := testConfig("app.lan.", "10.0.0.1", "10.0.0.2")
	app.fall = fall.Root
	down := testConfig("down.lan.", "10.9.0.1")
	down.AllDown = pool.AllDownFallthrough
	down.fall = fall.Root
	h := newTestHandler(t, app, down)
	zones := file.Zones{Z: map[string]*file.Zone{}}
	for origin, db := range map[string]string{"app.lan.": appLanDB, "down.lan.": downLanDB} {
		z, err := file.Parse(strings.NewReader(db), origin, "db."+origin, 0)
		if err != nil {
			t.Fatal(err)
		}
		zones.Z[origin] = z
		zones.Names = append(zones.Names, origin)
	}
	h.Next = file.File{Next: test.ErrorHandler(), Zones: zones}

	fileSOA := test.SOA("app.lan. 3600 IN SOA ns1.app.lan. admin.app.lan. 2024010101 7200 3600 1209600 300")
	downSOA := test.SOA("down.lan. 3600 IN SOA ns1.down.lan. admin.down.lan. 7 7200 3600 1209600 300")
	fileNS := []dns.RR{test.NS("app.lan. 3600 IN NS ns1.app.lan.")}
	backends := func(name string) []dns.RR {
		return []dns.RR{test.A(name + " 5 IN A 10.0.0.1"), test.A(name + " 5 IN A 10.0.0.2")}
	}
	runCases(t, h, []test.Case{
		{Qname: "web.app.lan.", Qtype: dns.TypeA, Answer: backends("web.app.lan.")},
		{Qname: "mail.app.lan.", Qtype: dns.TypeA, Answer: backends("mail.app.lan.")}, // every A is healthdns's
		{Qname: "web.app.lan.", Qtype: dns.TypeAAAA, Ns: []dns.RR{fileSOA}},           // not NXDOMAIN
		{Qname: "web.app.lan.", Qtype: dns.TypeTXT, Ns: []dns.RR{fileSOA}},
		{Qname: "a.b.app.lan.", Qtype: dns.TypeMX, Ns: []dns.RR{fileSOA}},
		{Qname: "app.lan.", Qtype: dns.TypeAAAA, Ns: []dns.RR{fileSOA}},
		{Qname: "app.lan.", Qtype: dns.TypeSOA, Answer: []dns.RR{fileSOA}, Ns: fileNS},
		{Qname: "app.lan.", Qtype: dns.TypeNS, Answer: []dns.RR{test.NS("app.lan. 3600 IN NS ns1.app.lan.")},
			Extra: []dns.RR{test.A("ns1.app.lan. 3600 IN A 10.0.0.53")}},
		{Qname: "app.lan.", Qtype: dns.TypeMX, Answer: []dns.RR{test.MX("app.lan. 3600 IN MX 10 mail.app.lan.")}, Ns: fileNS,
			Extra: []dns.RR{test.A("mail.app.lan. 3600 IN A 10.0.0.25")}},
		{Qname: "x.app.lan.", Qtype: dns.TypeTXT, Answer: []dns.RR{test.TXT(`x.app.lan. 3600 IN TXT "from-file"`)}, Ns: fileNS},
		// The NS host healthdns would name: still this server's address; its AAAA is the file's NODATA.
		{Qname: "ns.dns.app.lan.", Qtype: dns.TypeA, Answer: []dns.RR{test.A("ns.dns.app.lan. 5 IN A 127.0.0.53")}},
		{Qname: "ns.dns.app.lan.", Qtype: dns.TypeAAAA, Ns: []dns.RR{fileSOA}},
		// all_down fallthrough: the file answers the names it has; the others exist all the same.
		{Qname: "static.down.lan.", Qtype: dns.TypeA, Answer: []dns.RR{test.A("static.down.lan. 3600 IN A 10.0.9.9")},
			Ns: []dns.RR{test.NS("down.lan. 3600 IN NS ns1.down.lan.")}},
		{Qname: "x.down.lan.", Qtype: dns.TypeA, Ns: []dns.RR{downSOA}},
		{Qname: "down.lan.", Qtype: dns.TypeSOA, Answer: []dns.RR{downSOA}, Ns: []dns.RR{test.NS("down.lan. 3600 IN NS ns1.down.lan.")}},
	})
}

// TestServeDNSFallthroughWithoutNext: with no plugin after it, fallthrough has no one to defer
// to, and healthdns answers its zone as without it instead of failing.
func TestServeDNSFallthroughWithoutNext(t *testing.T) {
	cfg := testConfig("app.lan.", "10.0.0.1")
	cfg.fall = fall.Root
	h := newTestHandler(t, cfg)
	h.Next = nil
	soa := test.SOA("app.lan. 5 IN SOA ns.dns.app.lan. hostmaster.app.lan. 1 86400 7200 3600000 5")
	runCases(t, h, []test.Case{
		{Qname: "app.lan.", Qtype: dns.TypeSOA, Answer: []dns.RR{soa}},
		{Qname: "app.lan.", Qtype: dns.TypeNS, Answer: []dns.RR{test.NS("app.lan. 5 IN NS ns.dns.app.lan.")}, Extra: []dns.RR{test.A("ns.dns.app.lan. 5 IN A 127.0.0.53")}},
		{Qname: "x.app.lan.", Qtype: dns.TypeTXT, Ns: []dns.RR{soa}},
		{Qname: "x.app.lan.", Qtype: dns.TypeAAAA, Ns: []dns.RR{soa}},
	})
}

// TestExistingNamesFollowsCNAME: an NXDOMAIN is about the end of the answer's CNAME chain, and
// stays when that name lies outside every zone of healthdns.
func TestExistingNamesFollowsCNAME(t *testing.T) {
	h := newTestHandler(t, testConfig("app.lan.", "10.0.0.1"))
	for _, c := range []struct {
		target string
		want   int
	}{{"gone.example.", dns.RcodeNameError}, {"gone.app.lan.", dns.RcodeSuccess}} {
		m := new(dns.Msg)
		m.SetQuestion("alias.app.lan.", dns.TypeTXT)
		m.Rcode = dns.RcodeNameError
		m.Answer = []dns.RR{test.CNAME("alias.app.lan. 60 IN CNAME " + c.target)}
		rec := dnstest.NewRecorder(&test.ResponseWriter{})
		(&existingNames{ResponseWriter: rec, h: h}).WriteMsg(m)
		if rec.Msg.Rcode != c.want {
			t.Errorf("NXDOMAIN for a CNAME to %s: written as %s, want %s", c.target, dns.RcodeToString[rec.Msg.Rcode], dns.RcodeToString[c.want])
		}
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

// TestConfigSerial: the SOA serial is a function of the configuration alone, so every instance
// running the same Corefile shows the same one, and a change of any setting shows another.
func TestConfigSerial(t *testing.T) {
	serial := func(cfg poolConfig) uint32 {
		return newZonePool(cfg, health.NewRegistry(observer{})).zone.soa.Serial
	}
	base := func() poolConfig { return testConfig("app.lan.", "10.0.0.1", "10.0.0.2", "2001:db8::1") }

	// Pinned so that anything depending on the process (time, map order, pointers) shows up; a
	// deliberate change of what is hashed changes it, and this value with it.
	const pinned = 0x12a4b7d2
	if got := serial(base()); got != pinned {
		t.Errorf("serial of the base configuration %#x, want %#x", got, pinned)
	}
	if a, b := serial(base()), serial(base()); a != b {
		t.Errorf("the same configuration gave serials %d and %d", a, b)
	}

	changes := map[string]func(*poolConfig){
		"zone": func(c *poolConfig) { c.Zone = "web.app.lan." },
		"backend added": func(c *poolConfig) {
			c.Backends = append(c.Backends, pool.Backend{Addr: netip.MustParseAddr("10.0.0.4"), Weight: 1, Priority: balance.DefaultPriority})
		},
		"backend order":   func(c *poolConfig) { c.Backends[0], c.Backends[1] = c.Backends[1], c.Backends[0] },
		"weight":          func(c *poolConfig) { c.Backends[0].Weight = 2 },
		"check":           func(c *poolConfig) { c.Checks = []health.Check{{Kind: health.ICMP}} },
		"check port":      func(c *poolConfig) { c.Checks = []health.Check{{Kind: health.TCP, Port: 443}} },
		"second check":    func(c *poolConfig) { c.Checks = append(c.Checks, health.Check{Kind: health.HTTP, Port: 80, Path: "/"}) },
		"fast_interval":   func(c *poolConfig) { c.Spec.Fast = 100 * time.Millisecond },
		"priority":        func(c *poolConfig) { c.Backends[0].Priority = 200 },
		"nopreempt":       func(c *poolConfig) { c.Preempt.Never = true },
		"preempt_delay":   func(c *poolConfig) { c.Preempt.Delay = time.Second },
		"hash_prefix":     func(c *poolConfig) { c.hashPrefix = [2]int{24, 56} },
		"interval":        func(c *poolConfig) { c.Spec.Interval = time.Minute },
		"timeout":         func(c *poolConfig) { c.Spec.Timeout = 2 * time.Second },
		"rise":            func(c *poolConfig) { c.Spec.Rise = 3 },
		"fall":            func(c *poolConfig) { c.Spec.Fall = 3 },
		"policy":          func(c *poolConfig) { c.Policy = "random" },
		"answers":         func(c *poolConfig) { c.answers = 2 },
		"ttl":             func(c *poolConfig) { c.ttl = 30 },
		"all_down":        func(c *poolConfig) { c.AllDown = pool.AllDownServfail },
		"ns name":         func(c *poolConfig) { c.nsName = "ns1.app.lan." },
		"ns address":      func(c *poolConfig) { c.nsAddrs = []netip.Addr{netip.MustParseAddr("127.0.0.54")} },
		"ns address more": func(c *poolConfig) { c.nsAddrs = append(c.nsAddrs, netip.MustParseAddr("127.0.0.54")) },
		"fallthrough":     func(c *poolConfig) { c.fall = fall.Root },
		"fallthrough zone": func(c *poolConfig) {
			c.fall.SetZonesFromArgs([]string{"x.app.lan."})
		},
	}
	seen := map[uint32]string{serial(base()): "base"}
	for name, change := range changes {
		cfg := base()
		change(&cfg)
		s := serial(cfg)
		if prev, dup := seen[s]; dup {
			t.Errorf("%s: serial %d, the same as %s", name, s, prev)
		}
		seen[s] = name
	}
}
