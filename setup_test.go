package healthdns

import (
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coredns/caddy"

	"github.com/healthdns/healthdns/health"
)

func TestParseDefaults(t *testing.T) {
	c := caddy.NewTestController("dns", "healthdns app.lan {\n backend 10.0.0.1\n}")
	cfgs, err := parse(c)
	if err != nil {
		t.Fatal(err)
	}
	if len(cfgs) != 1 {
		t.Fatalf("%d pools", len(cfgs))
	}
	got := cfgs[0]
	want := health.Spec{Check: health.Check{Kind: health.ICMP}, Interval: time.Second, Timeout: 500 * time.Millisecond, Rise: 2, Fall: 2}
	if got.zone != "app.lan." || got.spec != want || got.policy != "random" || got.answers != 1 ||
		got.ttl != 5 || got.allDown != allDownServeAll || got.nsName != "ns.dns.app.lan." || got.nsAddrs != nil {
		t.Fatalf("defaults: %+v", got)
	}
	if len(got.backends) != 1 || got.backends[0] != (backend{netip.MustParseAddr("10.0.0.1"), 1}) {
		t.Fatalf("backends %+v", got.backends)
	}
}

func TestParseEverything(t *testing.T) {
	in := `healthdns App.LAN db.lan {
		backend 10.0.0.1 weight 9
		backend 2001:db8::1
		backend ::ffff:10.0.0.2
		check tcp 8080
		interval 200ms
		timeout 100ms
		rise 3
		fall 1
		policy weighted
		answers 3
		ttl 0
		all_down fallthrough
		ns ns1.app.lan 192.0.2.53 2001:db8::53
		fallthrough other.lan
	}`
	cfgs, err := parse(caddy.NewTestController("dns", in))
	if err != nil {
		t.Fatal(err)
	}
	if len(cfgs) != 2 || cfgs[0].zone != "app.lan." || cfgs[1].zone != "db.lan." {
		t.Fatalf("zones: %+v", cfgs)
	}
	c := cfgs[0]
	wantSpec := health.Spec{Check: health.Check{Kind: health.TCP, Port: 8080}, Interval: 200 * time.Millisecond, Timeout: 100 * time.Millisecond, Rise: 3, Fall: 1}
	if c.spec != wantSpec || c.policy != "weighted" || c.answers != 3 || c.ttl != 0 || c.allDown != allDownFallthrough {
		t.Fatalf("config %+v", c)
	}
	wantBackends := []backend{
		{netip.MustParseAddr("10.0.0.1"), 9},
		{netip.MustParseAddr("2001:db8::1"), 1},
		{netip.MustParseAddr("10.0.0.2"), 1}, // a v4-mapped address is served as IPv4
	}
	for i, b := range wantBackends {
		if c.backends[i] != b {
			t.Errorf("backend %d = %+v, want %+v", i, c.backends[i], b)
		}
	}
	if c.nsName != "ns1.app.lan." || len(c.nsAddrs) != 2 {
		t.Errorf("ns %s %v", c.nsName, c.nsAddrs)
	}
	if !c.fall.Through("x.other.lan.") || c.fall.Through("x.app.lan.") {
		t.Errorf("fallthrough zones %v", c.fall)
	}
}

func TestParseZonesFromServerBlock(t *testing.T) {
	c := caddy.NewTestController("dns", "healthdns {\n backend 10.0.0.1\n}")
	c.ServerBlockKeys = []string{"app.lan.:1053", "Other.Lan.:1053"}
	cfgs, err := parse(c)
	if err != nil {
		t.Fatal(err)
	}
	if len(cfgs) != 2 || cfgs[0].zone != "app.lan." || cfgs[1].zone != "other.lan." {
		t.Fatalf("zones %q %q", cfgs[0].zone, cfgs[1].zone)
	}
}

func TestParseSeveralBlocks(t *testing.T) {
	in := "healthdns api.lan {\n backend 10.0.0.1\n}\nhealthdns db.lan {\n backend 10.0.0.2\n check tcp 5432\n}"
	cfgs, err := parse(caddy.NewTestController("dns", in))
	if err != nil {
		t.Fatal(err)
	}
	if len(cfgs) != 2 || cfgs[1].zone != "db.lan." || cfgs[1].spec.Check.Port != 5432 || cfgs[0].spec.Check.Kind != health.ICMP {
		t.Fatalf("%+v", cfgs)
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name string
		in   string
		line int
		want string // part of the message
	}{
		{"unknown property", "healthdns app.lan {\n backend 10.0.0.1\n bogus 1\n}", 3, "unknown property 'bogus'"},
		{"bad ip", "healthdns app.lan {\n backend 10.0.0.300\n}", 2, "invalid address '10.0.0.300'"},
		{"hostname backend", "healthdns app.lan {\n backend web1.lan\n}", 2, "want an IPv4 or IPv6 literal"},
		{"scoped ip", "healthdns app.lan {\n backend fe80::1%eth0\n}", 2, "scoped"},
		{"duplicate backend", "healthdns app.lan {\n backend 10.0.0.1\n backend 10.0.0.1\n}", 3, "duplicate backend 10.0.0.1 (first on line 2)"},
		{"duplicate mapped backend", "healthdns app.lan {\n backend 10.0.0.1\n backend ::ffff:10.0.0.1\n}", 3, "duplicate backend"},
		{"weight 0", "healthdns app.lan {\n backend 10.0.0.1 weight 0\n}", 2, "invalid weight '0': want an integer from 1 to 1000"},
		{"weight 1001", "healthdns app.lan {\n backend 10.0.0.1 weight 1001\n}", 2, "invalid weight '1001'"},
		{"weight missing", "healthdns app.lan {\n backend 10.0.0.1 weight\n}", 2, "want 'backend ADDRESS [weight W]'"},
		{"backend option", "healthdns app.lan {\n backend 10.0.0.1 prio 2\n}", 2, "unknown backend option 'prio'"},
		{"timeout = interval", "healthdns app.lan {\n backend 10.0.0.1\n interval 1s\n timeout 1s\n}", 4, "timeout 1s must be shorter than interval 1s"},
		{"timeout > default interval", "healthdns app.lan {\n backend 10.0.0.1\n timeout 2s\n}", 3, "must be shorter than interval"},
		{"zero backends", "healthdns app.lan {\n check tcp 80\n}", 1, "no backend"},
		{"no block", "healthdns app.lan", 1, "no backend"},
		{"unknown policy", "healthdns app.lan {\n backend 10.0.0.1\n policy fastest\n}", 3, `unknown policy "fastest"`},
		{"unknown check", "healthdns app.lan {\n backend 10.0.0.1\n check http\n}", 3, "unknown check 'http'"},
		{"tcp without port", "healthdns app.lan {\n backend 10.0.0.1\n check tcp\n}", 3, "want 'check tcp PORT'"},
		{"tcp port 0", "healthdns app.lan {\n backend 10.0.0.1\n check tcp 0\n}", 3, "invalid tcp port '0'"},
		{"tcp port 70000", "healthdns app.lan {\n backend 10.0.0.1\n check tcp 70000\n}", 3, "invalid tcp port"},
		{"zero interval", "healthdns app.lan {\n backend 10.0.0.1\n interval 0s\n}", 3, "invalid interval '0s': want a positive duration"},
		{"negative interval", "healthdns app.lan {\n backend 10.0.0.1\n interval -1s\n}", 3, "invalid interval '-1s'"},
		{"unit-less timeout", "healthdns app.lan {\n backend 10.0.0.1\n timeout 100\n}", 3, "invalid timeout '100'"},
		{"rise 0", "healthdns app.lan {\n backend 10.0.0.1\n rise 0\n}", 3, "invalid rise '0'"},
		{"fall -1", "healthdns app.lan {\n backend 10.0.0.1\n fall -1\n}", 3, "invalid fall '-1'"},
		{"answers 0", "healthdns app.lan {\n backend 10.0.0.1\n answers 0\n}", 3, "invalid answers '0'"},
		{"answers 65", "healthdns app.lan {\n backend 10.0.0.1\n answers 65\n}", 3, "from 1 to 64"},
		{"ttl negative", "healthdns app.lan {\n backend 10.0.0.1\n ttl -5\n}", 3, "invalid ttl '-5'"},
		{"all_down unknown", "healthdns app.lan {\n backend 10.0.0.1\n all_down nxdomain\n}", 3, "invalid all_down 'nxdomain'"},
		{"ns without address", "healthdns app.lan {\n backend 10.0.0.1\n ns ns1.app.lan\n}", 3, "want 'ns NAME ADDRESS...'"},
		{"ns bad address", "healthdns app.lan {\n backend 10.0.0.1\n ns ns1.app.lan 1.2.3\n}", 3, "invalid address '1.2.3'"},
		{"ns at the apex", "healthdns app.lan {\n backend 10.0.0.1\n ns app.lan 10.0.0.53\n}", 1, "ns name app.lan. is the zone itself"},
		{"zone twice", "healthdns app.lan {\n backend 10.0.0.1\n}\nhealthdns APP.lan {\n backend 10.0.0.2\n}", 4, "zone app.lan. is configured twice"},
		{"extra argument", "healthdns app.lan {\n backend 10.0.0.1\n interval 1s 2s\n}", 3, "want 'interval DURATION'"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parse(caddy.NewTestController("dns", tc.in))
			if err == nil {
				t.Fatal("no error")
			}
			msg := err.Error()
			if !strings.Contains(msg, tc.want) {
				t.Errorf("error %q does not contain %q", msg, tc.want)
			}
			if prefix := "Testfile:" + strconv.Itoa(tc.line) + " - "; !strings.HasPrefix(msg, prefix) {
				t.Errorf("error %q does not start with %q", msg, prefix)
			}
		})
	}
}

func TestServerAddrs(t *testing.T) {
	got := serverAddrs([]string{"127.0.0.1", "::1"})
	if len(got) != 2 || got[0] != netip.MustParseAddr("127.0.0.1") || got[1] != netip.MustParseAddr("::1") {
		t.Fatalf("bound: %v", got)
	}
	for _, a := range serverAddrs(nil) {
		if a.IsUnspecified() || a.IsLinkLocalUnicast() {
			t.Errorf("wildcard gave %s", a)
		}
	}
	if len(serverAddrs(nil)) == 0 {
		t.Error("wildcard gave no address")
	}
}
