package healthdns

import (
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/coredns/caddy"
)

// TestParseBackendsEtcd: the block's defaults (the endpoint on loopback, a prefix per zone) and
// its properties.
func TestParseBackendsEtcd(t *testing.T) {
	c := caddy.NewTestController("dns", "healthdns a.lan b.lan {\n backends_etcd\n}")
	cfgs, err := parse(c)
	if err != nil {
		t.Fatal(err)
	}
	for i, want := range []string{"/healthdns/a.lan/", "/healthdns/b.lan/"} {
		ec := cfgs[i].source.etcd
		if ec.prefix != want || !slices.Equal(ec.endpoints, []string{"http://127.0.0.1:2379"}) {
			t.Errorf("zone %s: prefix %q, endpoints %v; want %q and the loopback default", cfgs[i].zone, ec.prefix, ec.endpoints, want)
		}
	}
	c = caddy.NewTestController("dns", "healthdns a.lan {\n backend 10.0.0.1\n backends_etcd {\n  endpoint http://10.0.0.5:2379 https://10.0.0.6:2379\n  prefix /svc/a\n  credentials healthdns s3cret\n }\n ttl 7\n}")
	cfgs, err = parse(c)
	if err != nil {
		t.Fatal(err)
	}
	ec := cfgs[0].source.etcd
	if ec.prefix != "/svc/a/" || len(ec.endpoints) != 2 || ec.user != "healthdns" || ec.password != "s3cret" || cfgs[0].ttl != 7 {
		t.Errorf("parsed %+v, ttl %d", ec, cfgs[0].ttl)
	}
}

// TestParseBackendsFileData: comments, blank lines and the backend words; errors name the line.
func TestParseBackendsFileData(t *testing.T) {
	static := []backend{{addr: netip.MustParseAddr("10.0.0.1")}}
	list, err := parseBackendsFileData("f", []byte("# head\n\n10.0.0.2 weight 3 # note\n10.0.0.3 priority 50 drain until 2026-12-24T18:00:00Z kernel upgrade\n"), static)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 2 || list[0].weight != 3 || list[1].priority != 50 || list[1].drain.reason != "kernel upgrade" {
		t.Errorf("parsed %+v", list)
	}
	for text, want := range map[string]string{
		"10.0.0.2\n10.0.0.2\n": "f:2: backend 10.0.0.2 listed twice (first in line 1)",
		"10.0.0.1\n":           "f:1: backend 10.0.0.1 listed twice (first in the Corefile)",
		"10.0.0.2 speed 3\n":   "f:1: unknown backend option 'speed'",
	} {
		_, err := parseBackendsFileData("f", []byte(text), static)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: error %v, want %q", text, err, want)
		}
	}
	if _, err := parseEtcdBackends("/p/", map[string]string{"a/b": ""}, nil); err == nil || !strings.Contains(err.Error(), "etcd key /p/a/b: invalid address 'a/b'") {
		t.Errorf("a nested key: %v", err)
	}
}
