package healthdns

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"testing"

	"github.com/coredns/caddy"
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/plugin"
	"github.com/miekg/dns"
)

// BenchmarkServeDNS runs healthdns's query path beside the stock hosts plugin's, in the same
// binary and with the same writer, for each policy and answer count. Compare ns/op and allocs/op
// within one run: `go test -run XXX -bench ServeDNS -benchmem .`
func BenchmarkServeDNS(b *testing.B) {
	m := new(dns.Msg)
	m.SetQuestion("www.app.lan.", dns.TypeA)
	w := &discardWriter{}

	b.Run("hosts", func(b *testing.B) {
		h := hostsHandler(b, "10.0.0.1 www.app.lan")
		serve(b, h, m, w)
	})
	for _, policy := range []string{"random", "round_robin", "weighted"} {
		for _, answers := range []int{1, 3, 8} {
			b.Run(fmt.Sprintf("healthdns/%s/answers=%d", policy, answers), func(b *testing.B) {
				cfg := testConfig("app.lan.", "10.0.0.1", "10.0.0.2", "10.0.0.4", "10.0.0.5", "10.0.0.6", "10.0.0.7", "10.0.0.8", "10.0.0.9")
				cfg.Policy, cfg.answers = policy, answers
				h := newTestHandler(b, cfg)
				serve(b, h, m, w)
			})
		}
	}
}

func serve(b *testing.B, h plugin.Handler, m *dns.Msg, w dns.ResponseWriter) {
	ctx := context.Background()
	if rcode, err := h.ServeDNS(ctx, w, m); rcode != dns.RcodeSuccess || err != nil {
		b.Fatalf("rcode %d err %v", rcode, err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		h.ServeDNS(ctx, w, m)
	}
}

// hostsHandler builds the hosts plugin the way CoreDNS does, through its registered setup.
func hostsHandler(b *testing.B, inline string) plugin.Handler {
	b.Helper()
	setupHosts, err := caddy.DirectiveAction("dns", "hosts")
	if err != nil {
		b.Fatal(err)
	}
	c := caddy.NewTestController("dns", "hosts /nonexistent app.lan {\n"+inline+"\n}")
	if err := setupHosts(c); err != nil {
		b.Fatal(err)
	}
	for _, f := range dnsserver.GetConfig(c).Plugin {
		return f(nil)
	}
	b.Fatal("hosts added no handler")
	return nil
}

// BenchmarkServeDNSConsistentHash puts consistent_hash beside random at 3 and 1,000 backends:
// its cost per query must not grow with the pool (the HashTable is built with the snapshot).
//
//	go test -run XXX -bench ServeDNSConsistentHash -benchmem .
func BenchmarkServeDNSConsistentHash(b *testing.B) {
	m := new(dns.Msg)
	m.SetQuestion("www.app.lan.", dns.TypeA)
	w := &clientWriter{addr: &net.UDPAddr{IP: net.ParseIP("192.0.2.7"), Port: 5353}}
	for _, size := range []int{3, 1000} {
		backends := make([]string, size)
		for i := range backends {
			backends[i] = netip.AddrFrom4([4]byte{10, 1, byte(i >> 8), byte(i)}).String()
		}
		for _, policy := range []string{"random", "consistent_hash"} {
			b.Run(fmt.Sprintf("%s/backends=%d", policy, size), func(b *testing.B) {
				cfg := testConfig("app.lan.", backends...)
				cfg.Policy, cfg.answers = policy, 1
				serve(b, newTestHandler(b, cfg), m, w)
			})
		}
	}
}
