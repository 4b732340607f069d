package healthdns

import (
	"strings"
	"testing"

	"github.com/coredns/caddy"

	"github.com/healthdns/healthdns/pool"
)

func TestParseFleetQuorum(t *testing.T) {
	const block = "healthdns app.lan {\n backend 10.0.0.1\n backends_etcd\n nopreempt\n%s}"
	for _, tc := range []struct {
		line string
		want pool.Quorum
	}{
		{"", pool.Quorum{}},
		{" fleet_quorum majority\n", pool.Quorum{}},
		{" fleet_quorum any\n", pool.Quorum{Any: true}},
		{" fleet_quorum 2\n", pool.Quorum{N: 2}},
	} {
		c := caddy.NewTestController("dns", strings.Replace(block, "%s", tc.line, 1))
		cfgs, err := parse(c)
		if err != nil {
			t.Fatalf("%q: %v", tc.line, err)
		}
		if got := cfgs[0].Quorum; got != tc.want {
			t.Errorf("%q: quorum %+v, want %+v", tc.line, got, tc.want)
		}
	}
	for _, tc := range []struct{ in, err string }{
		{"healthdns app.lan {\n backend 10.0.0.1\n backends_etcd\n nopreempt\n fleet_quorum\n}", "want 'fleet_quorum N', 'fleet_quorum majority' or 'fleet_quorum any'"},
		{"healthdns app.lan {\n backend 10.0.0.1\n backends_etcd\n nopreempt\n fleet_quorum 0\n}", `fleet_quorum "0": want a number of servers (1 to 1000), majority or any`},
		{"healthdns app.lan {\n backend 10.0.0.1\n backends_etcd\n nopreempt\n fleet_quorum half\n}", `fleet_quorum "half"`},
		{"healthdns app.lan {\n backend 10.0.0.1\n backends_etcd\n fleet_quorum 2\n}", "Testfile:4 - Error during parsing: fleet_quorum without 'nopreempt' and 'backends_etcd'"},
		{"healthdns app.lan {\n backend 10.0.0.1\n nopreempt\n fleet_quorum 2\n}", "Testfile:4 - Error during parsing: fleet_quorum without 'nopreempt' and 'backends_etcd'"},
	} {
		_, err := parse(caddy.NewTestController("dns", tc.in))
		if err == nil || !strings.Contains(err.Error(), tc.err) {
			t.Errorf("%q: error %v, want %q", tc.in, err, tc.err)
		}
	}
}
