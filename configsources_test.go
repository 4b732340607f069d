package healthdns

import (
	"slices"
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
		ec := cfgs[i].Source.Etcd
		if ec.Prefix != want || !slices.Equal(ec.Endpoints, []string{"http://127.0.0.1:2379"}) {
			t.Errorf("zone %s: prefix %q, endpoints %v; want %q and the loopback default", cfgs[i].Zone, ec.Prefix, ec.Endpoints, want)
		}
	}
	c = caddy.NewTestController("dns", "healthdns a.lan {\n backend 10.0.0.1\n backends_etcd {\n  endpoint http://10.0.0.5:2379 https://10.0.0.6:2379\n  prefix /svc/a\n  credentials healthdns s3cret\n }\n ttl 7\n}")
	cfgs, err = parse(c)
	if err != nil {
		t.Fatal(err)
	}
	ec := cfgs[0].Source.Etcd
	if ec.Prefix != "/svc/a/" || len(ec.Endpoints) != 2 || ec.User != "healthdns" || ec.Password != "s3cret" || cfgs[0].ttl != 7 {
		t.Errorf("parsed %+v, ttl %d", ec, cfgs[0].ttl)
	}
}
