package test

import (
	"testing"
	"time"

	"github.com/healthdns/healthdns/test/harness"
	"github.com/miekg/dns"
)

// TestCacheInFront shows what the README says of the cache plugin: a cached pool gives every
// client one pick and cache's minimum TTL of 5 s, and a pool in a server block of its own, without
// cache, keeps its policy and ttl. (cache's `disable success ZONE` is not enough: cache still
// raises the TTL of what it passes on to its minimum.)
func TestCacheInFront(t *testing.T) {
	t.Parallel()
	ips := []string{"127.0.0.124", "127.0.0.125", "127.0.0.126"}
	port, _ := harness.StartBackends(t, ips...)
	s := harness.Start(t, "cached.lan:{{PORT}} {\n bind 127.0.0.1\n cache 30\n"+
		harness.TCPPool("", port, "1s", "500ms", ips, "policy round_robin", "ttl 1")+"}\n"+
		"direct.lan:{{PORT}} {\n bind 127.0.0.1\n"+
		harness.TCPPool("", port, "1s", "500ms", ips, "policy round_robin", "ttl 1")+"}\n")
	harness.Eventually(t, 10*time.Second, func() bool {
		seen := map[string]bool{}
		for range 6 {
			for _, a := range s.Addrs(t, "udp", "direct.lan.", dns.TypeA) {
				seen[a] = true
			}
		}
		return len(seen) == len(ips)
	}, "all three backends up")

	answers := func(name string) (picks []string, ttls []uint32) {
		for range 6 {
			r := s.Query(t, "udp", name, dns.TypeA)
			if len(r.Answer) != 1 {
				t.Fatalf("%s: %v, want one address", name, r.Answer)
			}
			picks = append(picks, harness.AnswerAddrs(r)[0])
			ttls = append(ttls, r.Answer[0].Header().Ttl)
		}
		return picks, ttls
	}

	picks, ttls := answers("direct.lan.")
	if harness.Distinct(picks) != len(ips) {
		t.Errorf("direct.lan (kept out of the cache): picks %v, want round_robin through all %d", picks, len(ips))
	}
	for _, ttl := range ttls {
		if ttl != 1 {
			t.Errorf("direct.lan: TTL %d, want the pool's ttl 1", ttl)
		}
	}

	picks, ttls = answers("cached.lan.")
	if harness.Distinct(picks) != 1 {
		t.Errorf("cached.lan: picks %v; the README says a cached pool gives every client one pick", picks)
	}
	if ttls[len(ttls)-1] < 2 {
		t.Errorf("cached.lan: TTLs %v; the README says cache serves its minimum of 5 s, not ttl 1", ttls)
	}
}
