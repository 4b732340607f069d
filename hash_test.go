package healthdns

import (
	"context"
	"net"
	"net/netip"
	"testing"

	"github.com/coredns/coredns/plugin/pkg/dnstest"
	"github.com/coredns/coredns/plugin/test"
	"github.com/miekg/dns"
)

// TestServeDNSConsistentHash: a client stays on its backend, keyed by its address masked to
// hash_prefix, or by the subnet an ECS option names, which the reply carries back with its scope.
func TestServeDNSConsistentHash(t *testing.T) {
	cfg := testConfig("sticky.lan.", "10.0.0.1", "10.0.0.2", "10.0.0.4", "10.0.0.5")
	cfg.Policy = "consistent_hash"
	cfg.answers = 1
	cfg.hashPrefix = [2]int{24, 56}
	h := newTestHandler(t, cfg)

	ask := func(client string, ecs *dns.EDNS0_SUBNET) *dns.Msg {
		t.Helper()
		m := new(dns.Msg)
		m.SetQuestion("sticky.lan.", dns.TypeA)
		if ecs != nil {
			m.SetEdns0(1232, false)
			m.IsEdns0().Option = append(m.IsEdns0().Option, ecs)
		}
		rec := dnstest.NewRecorder(&test.ResponseWriter{RemoteIP: client})
		if _, err := h.ServeDNS(context.Background(), rec, m); err != nil || rec.Msg == nil || len(rec.Msg.Answer) != 1 {
			t.Fatalf("client %s: %v %v", client, err, rec.Msg)
		}
		return rec.Msg
	}
	first := func(r *dns.Msg) string { return r.Answer[0].(*dns.A).A.String() }

	// Clients of one /24 share a backend; over many /24s every backend gets some.
	spread := map[string]bool{}
	for i := range 64 {
		a := first(ask(netIP(192, 0, byte(i), 10), nil))
		if b := first(ask(netIP(192, 0, byte(i), 200), nil)); a != b {
			t.Errorf("two clients of 192.0.%d.0/24 got %s and %s: hash_prefix 24 keys them alike", i, a, b)
		}
		spread[a] = true
	}
	if len(spread) != 4 {
		t.Errorf("64 subnets reached %d of 4 backends", len(spread))
	}

	// With ECS, the subnet is the key, whoever asks, and the reply says the scope used.
	ecs := &dns.EDNS0_SUBNET{Code: dns.EDNS0SUBNET, Family: 1, SourceNetmask: 28, Address: net.ParseIP("198.51.100.16").To4()}
	r := ask("127.0.0.1", ecs)
	if got := first(ask("10.9.9.9", ecs)); got != first(r) {
		t.Errorf("the same ECS subnet from two forwarders got %s and %s", first(r), got)
	}
	opt := r.IsEdns0()
	if opt == nil || len(opt.Option) != 1 {
		t.Fatalf("reply to an ECS query carries no ECS: %v", r)
	}
	back := opt.Option[0].(*dns.EDNS0_SUBNET)
	if back.SourceNetmask != 28 || back.SourceScope != 24 || !back.Address.Equal(ecs.Address) || back.Family != 1 {
		t.Errorf("ECS in the reply %+v, want the query's with SCOPE 24 (hash_prefix below its /28)", back)
	}
	m := new(dns.Msg)
	m.SetQuestion("sticky.lan.", dns.TypeA)
	w := &clientWriter{addr: &net.UDPAddr{IP: net.ParseIP("192.0.2.7"), Port: 5353}}
	// As TestServeDNSAllocations: the reply, its question, the answer slice and the records.
	// A source prefix of 0 opts out: the client's own address keys the answer, and SCOPE is 0.
	optOut := &dns.EDNS0_SUBNET{Code: dns.EDNS0SUBNET, Family: 1, SourceNetmask: 0, Address: net.IPv4zero.To4()}
	r0 := ask("192.0.2.99", optOut)
	if want := first(ask("192.0.2.99", nil)); first(r0) != want {
		t.Errorf("an ECS /0 query got %s, want the client's own answer %s", first(r0), want)
	}
	if e := r0.IsEdns0().Option[0].(*dns.EDNS0_SUBNET); e.SourceScope != 0 {
		t.Errorf("an ECS /0 reply has SCOPE %d, want 0", e.SourceScope)
	}
	if a := testing.AllocsPerRun(200, func() { h.ServeDNS(context.Background(), w, m) }); a > 4 {
		t.Errorf("%.1f allocations per sticky answer, want at most 4 as any other", a)
	}
}

// clientWriter is a ResponseWriter for a client at addr that keeps nothing.
type clientWriter struct {
	discardWriter
	addr net.Addr
}

func (w *clientWriter) RemoteAddr() net.Addr { return w.addr }

func netIP(a, b, c, d byte) string { return netip.AddrFrom4([4]byte{a, b, c, d}).String() }
