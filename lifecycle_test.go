package healthdns

import (
	"strings"
	"testing"

	"github.com/healthdns/healthdns/health"
	"github.com/healthdns/healthdns/pool"
)

// TestReloadChanges: a reload says, a line per pool, which pools, Corefile backends, checks and
// live lists it added or removed, and says so in one line when it changed none.
func TestReloadChanges(t *testing.T) {
	cfg := func(zone string, backends []string, checks ...health.Check) *poolConfig {
		c := testConfig(zone, backends...)
		c.Server = "dns://:53"
		if checks != nil {
			c.Checks = checks
		}
		return &c
	}
	tcp80 := health.Check{Kind: health.TCP, Port: 80}
	http := health.Check{Kind: health.HTTP, Port: 8080, Path: "/healthz"}
	etcd := cfg("live.lan.", nil)
	etcd.Source = pool.Source{Kind: pool.SourceEtcd, Etcd: pool.EtcdSource{Endpoints: []string{"http://127.0.0.1:2379"}, Prefix: "/healthdns/live.lan/"}}
	many := make([]string, 8)
	for i := range many {
		many[i] = "10.0.1." + string(rune('1'+i))
	}
	tests := []struct {
		name       string
		prev, next []*poolConfig
		want       []string
	}{{
		name: "backends and checks",
		prev: []*poolConfig{cfg("app.lan.", []string{"10.0.0.7", "10.0.0.8"}, tcp80)},
		next: []*poolConfig{cfg("app.lan.", []string{"10.0.0.8", "10.0.0.9"}, tcp80, http)},
		want: []string{"reload: zone app.lan. (dns://:53): backends added 10.0.0.9, removed 10.0.0.7; checks added " + http.String()},
	}, {
		name: "pools added and removed",
		prev: []*poolConfig{cfg("old.lan.", []string{"10.0.0.1"}), cfg("app.lan.", []string{"10.0.0.2"})},
		next: []*poolConfig{cfg("app.lan.", []string{"10.0.0.2"}), cfg("new.lan.", []string{"10.0.0.3", "10.0.0.4"}), etcd},
		want: []string{
			"reload: zone new.lan. (dns://:53) added: backends 10.0.0.3, 10.0.0.4; checks tcp :80",
			"reload: zone live.lan. (dns://:53) added: 0 backends and the etcd /healthdns/live.lan/ http://127.0.0.1:2379; checks tcp :80",
			"reload: zone old.lan. (dns://:53) removed",
		},
	}, {
		name: "many backends are counted, not all named",
		prev: []*poolConfig{cfg("app.lan.", nil)},
		next: []*poolConfig{cfg("app.lan.", many)},
		want: []string{"reload: zone app.lan. (dns://:53): backends added 8 (10.0.1.1, 10.0.1.2, 10.0.1.3, 10.0.1.4, 10.0.1.5, ...)"},
	}, {
		name: "nothing changed",
		prev: []*poolConfig{cfg("app.lan.", []string{"10.0.0.7"})},
		next: []*poolConfig{cfg("app.lan.", []string{"10.0.0.7"})},
		want: []string{"reload: no zone, backend line or check changed"},
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := reloadChanges(tc.prev, tc.next)
			if strings.Join(got, "\n") != strings.Join(tc.want, "\n") {
				t.Errorf("got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(tc.want, "\n"))
			}
		})
	}
}
