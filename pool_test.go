package healthdns

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/coredns/coredns/plugin/pkg/dnstest"
	"github.com/coredns/coredns/plugin/test"
	"github.com/miekg/dns"

	"github.com/healthdns/healthdns/balance"
	"github.com/healthdns/healthdns/health"
)

// switchboard is a probe whose dead addresses the test changes while the pool runs.
type switchboard struct {
	mu   sync.Mutex
	dead map[netip.Addr]bool
}

func (s *switchboard) set(addr string, dead bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.dead[netip.MustParseAddr(addr)] = dead
}

func (s *switchboard) probe(_ context.Context, a netip.Addr) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.dead[a] {
		return errors.New("tcp :80: connection refused")
	}
	return nil
}

// groupPool runs a pool of a primary (priority 200) and a standby (100) probed every 20ms.
func groupPool(t *testing.T, pre balance.Preemption) (*Pool, *switchboard) {
	t.Helper()
	sw := &switchboard{dead: map[netip.Addr]bool{}}
	cfg := testConfig("ha.lan.", "10.0.0.1", "10.0.0.2")
	cfg.backends[0].priority = 200
	cfg.spec.Interval, cfg.spec.Timeout, cfg.spec.Rise, cfg.spec.Fall = 20*time.Millisecond, 10*time.Millisecond, 2, 2
	cfg.preempt = pre
	p := newPool(cfg, balance.Random{}, health.NewRegistry(observer{}, health.WithProbe(sw.probe)))
	startPools([]*Pool{p})
	t.Cleanup(p.stop)
	return p, sw
}

// serving returns the addresses the pool answers A with now.
func serving(p *Pool) []string {
	var out []string
	for _, a := range p.snap.Load().v4.set.Addrs {
		out = append(out, a.String())
	}
	return out
}

func waitServing(t *testing.T, p *Pool, want string, what string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		got := serving(p)
		if len(got) == 1 && got[0] == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: serving %v, want only %s", what, got, want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestPoolPriorityGroups: answers come from the highest group with a healthy backend; how the
// primary takes back when it returns follows the pool's preemption. The state machine's own
// cases are balance's TestFailover; this checks the pool acts on them, timer included.
func TestPoolPriorityGroups(t *testing.T) {
	t.Run("preempt", func(t *testing.T) {
		p, sw := groupPool(t, balance.Preemption{})
		waitServing(t, p, "10.0.0.1", "at start")
		sw.set("10.0.0.1", true)
		waitServing(t, p, "10.0.0.2", "primary dead")
		sw.set("10.0.0.1", false)
		waitServing(t, p, "10.0.0.1", "primary back")
	})
	t.Run("preempt_delay", func(t *testing.T) {
		const delay = 300 * time.Millisecond
		p, sw := groupPool(t, balance.Preemption{Delay: delay})
		waitServing(t, p, "10.0.0.1", "at start")
		sw.set("10.0.0.1", true)
		waitServing(t, p, "10.0.0.2", "primary dead")
		back := time.Now()
		sw.set("10.0.0.1", false)
		waitServing(t, p, "10.0.0.1", "primary back after the delay")
		if took := time.Since(back); took < delay {
			t.Errorf("the primary took back %v after it returned, before its preempt_delay %v", took, delay)
		}
	})
	t.Run("nopreempt", func(t *testing.T) {
		p, sw := groupPool(t, balance.Preemption{Never: true})
		waitServing(t, p, "10.0.0.1", "at start")
		sw.set("10.0.0.1", true)
		waitServing(t, p, "10.0.0.2", "primary dead")
		sw.set("10.0.0.1", false)
		// The primary is healthy again (rise 2 at 20ms): the standby keeps serving.
		deadline := time.Now().Add(300 * time.Millisecond)
		for time.Now().Before(deadline) {
			if got := serving(p); len(got) != 1 || got[0] != "10.0.0.2" {
				t.Fatalf("nopreempt: serving %v after the primary returned, want the standby still", got)
			}
			time.Sleep(10 * time.Millisecond)
		}
		if _, err := p.FailBack("test"); err != nil {
			t.Fatal(err)
		}
		waitServing(t, p, "10.0.0.1", "after the fail-back command")
		sw.set("10.0.0.2", true)
		sw.set("10.0.0.1", true)
		sw.set("10.0.0.1", false) // both died, the primary came back: the highest healthy serves
		waitServing(t, p, "10.0.0.1", "after all down")
	})
	t.Run("reload keeps the serving group under nopreempt", func(t *testing.T) {
		p, sw := groupPool(t, balance.Preemption{Never: true})
		waitServing(t, p, "10.0.0.1", "at start")
		sw.set("10.0.0.1", true)
		waitServing(t, p, "10.0.0.2", "primary dead")
		sw.set("10.0.0.1", false)
		time.Sleep(100 * time.Millisecond) // the primary is healthy again
		// A reload: a new pool of the same backends and priorities starts while the old runs.
		next := newPool(p.cfg, balance.Random{}, p.reg)
		startPools([]*Pool{next})
		p.stop()
		t.Cleanup(next.stop)
		if got := serving(next); len(got) != 1 || got[0] != "10.0.0.2" {
			t.Errorf("after a reload the new pool serves %v, want the standby it took over", got)
		}
	})
}

// TestServeDNSConsistentHash: a client stays on its backend, keyed by its address masked to
// hash_prefix, or by the subnet an ECS option names, which the reply carries back with its scope.
func TestServeDNSConsistentHash(t *testing.T) {
	cfg := testConfig("sticky.lan.", "10.0.0.1", "10.0.0.2", "10.0.0.4", "10.0.0.5")
	cfg.policy = "consistent_hash"
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
