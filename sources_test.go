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
	// In etcd each key is a backend: a bad one is skipped, and the others make the list.
	list, skipped, err := parseEtcdBackends("/p/", map[string]string{
		"a/b": "", "10.0.0.1": "", "10.0.0.2": "weight heavy", "10.0.0.3": "priority 50", "10.0.0.4": "",
	}, static)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 2 || list[0].addr.String() != "10.0.0.3" || list[0].priority != 50 || list[1].addr.String() != "10.0.0.4" {
		t.Errorf("etcd list %+v, want 10.0.0.3 and 10.0.0.4", list)
	}
	wantSkipped := []skippedKey{
		{"/p/10.0.0.1", "backend 10.0.0.1 listed twice (also the Corefile)"},
		{"/p/10.0.0.2", "invalid weight 'heavy'"},
		{"/p/a/b", "invalid address 'a/b'"},
	}
	if len(skipped) != len(wantSkipped) {
		t.Fatalf("skipped %+v, want %+v", skipped, wantSkipped)
	}
	for i, w := range wantSkipped {
		if skipped[i].key != w.key || !strings.HasPrefix(skipped[i].err, w.err) {
			t.Errorf("skipped[%d] = %+v, want %+v", i, skipped[i], w)
		}
	}
}
