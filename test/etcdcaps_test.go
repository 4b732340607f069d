package test

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/healthdns/healthdns/test/harness"
)

// TestEtcdValueCap: a value over 4 KiB is skipped as a bad key is (logged once, counted in
// source_skipped_keys, named by /status.json), though its words would make a backend: here a
// backend line padded with spaces. The prefix's other keys apply; a value brought back under
// the cap applies too.
func TestEtcdValueCap(t *testing.T) {
	harness.RequireEtcd(t)
	t.Parallel()
	const a, b, huge = "127.0.9.11", "127.0.9.12", "127.0.9.13"
	const prefix = "/healthdns/valuecap.lan/"
	port, _ := harness.StartBackends(t, a, b, huge)
	etcd := harness.StartEtcd(t)
	kv := etcd.Client(t)
	put(t, kv, prefix+a, "")
	put(t, kv, prefix+b, "")
	padded := "weight 2" + strings.Repeat(" ", 5000)
	put(t, kv, prefix+huge, padded)
	statusAddr := "127.0.0.1:" + strconv.Itoa(harness.FreePort(t))
	s := harness.Start(t, ".:{{PORT}} {\n bind 127.0.0.1\n prometheus {{METRICS}}\n"+
		etcdPool("valuecap.lan", etcd.Endpoint(), port, "status "+statusAddr)+"}\n")
	answers := func(ips ...string) func() bool {
		return func() bool { return harness.SameSet(s.Addrs(t, "udp", "valuecap.lan.", dns.TypeA), ips...) }
	}
	harness.Eventually(t, 10*time.Second, answers(a, b), a, " and ", b, " answered, ", huge, " not")
	line := fmt.Sprintf("zone valuecap.lan.: backends_etcd: etcd key %s%s: value of %d bytes, over the 4096 bytes a value may hold; skipped", prefix, huge, len(padded))
	harness.Eventually(t, 10*time.Second, func() bool { return strings.Contains(s.Output(), line) }, "a log line naming the oversized key")
	if got := etcdSources(t, "http://"+statusAddr+"/status.json")["valuecap.lan."]; len(got) != 1 || !strings.Contains(got[prefix+huge], "value of 5008 bytes") {
		t.Errorf("/status.json's etcd source skips %v, want %s%s and its size", got, prefix, huge)
	}
	if n, _ := s.Scrape(t).Value("coredns_healthdns_source_skipped_keys", map[string]string{"zone": "valuecap.lan.", "source": "etcd"}); n != 1 {
		t.Errorf("source_skipped_keys = %v, want 1", n)
	}

	put(t, kv, prefix+huge, "weight 2")
	harness.Eventually(t, 10*time.Second, answers(a, b, huge), "the key brought under the cap answered")
	if n := strings.Count(s.Output(), line); n != 1 {
		t.Errorf("the oversized key logged %d times, want once", n)
	}
}

// TestEtcdKeyCap: a prefix that grows past 65,536 keys (healthdns's own keys count: here
// keys that no backend or drain reads) is refused whole, with an error naming it and its count,
// and the last good list keeps serving: a drain written meanwhile is not applied. Once the
// prefix is back under the cap its list applies, the drain with it.
func TestEtcdKeyCap(t *testing.T) {
	harness.RequireEtcd(t)
	t.Parallel()
	const a, b = "127.0.9.21", "127.0.9.22"
	const prefix = "/healthdns/keycap.lan/"
	port, _ := harness.StartBackends(t, a, b)
	etcd := harness.StartEtcd(t)
	kv := etcd.Client(t)
	put(t, kv, prefix+a, "")
	put(t, kv, prefix+b, "")
	s := harness.Start(t, ".:{{PORT}} {\n bind 127.0.0.1\n"+etcdPool("keycap.lan", etcd.Endpoint(), port)+"}\n")
	answers := func(ips ...string) func() bool {
		return func() bool { return harness.SameSet(s.Addrs(t, "udp", "keycap.lan.", dns.TypeA), ips...) }
	}
	harness.Eventually(t, 10*time.Second, answers(a, b), "the first list")

	// 65,535 more keys make 65,537, in transactions of etcd's most operations (128).
	const fill = 65535
	ops := make([]clientv3.Op, 0, 128)
	flush := func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := kv.Txn(ctx).Then(ops...).Commit(); err != nil {
			t.Fatalf("filling the prefix: %v", err)
		}
		ops = ops[:0]
	}
	for i := range fill {
		ops = append(ops, clientv3.OpPut(fmt.Sprintf("%s_fill/%05d", prefix, i), ""))
		if len(ops) == cap(ops) {
			flush()
		}
	}
	flush()
	refusal := "zone keycap.lan.: backends_etcd: etcd prefix " + prefix + " holds 65537 keys, more than the 65536 one zone may hold; keeping the last good list (2 from it)"
	harness.Eventually(t, 30*time.Second, func() bool { return strings.Contains(s.Output(), refusal) }, "the prefix refused: ", refusal)
	put(t, kv, prefix+a, "drain while refused")
	// Nothing to wait for but the absence of a change: the same list must answer once the
	// refused prefix was counted again (the count follows every change, a second apart).
	if harness.Poll(3*time.Second, 50*time.Millisecond, func() bool { return !answers(a, b)() }) {
		t.Fatalf("a drain written while the prefix is over its cap applied: %v", s.Addrs(t, "udp", "keycap.lan.", dns.TypeA))
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := kv.Delete(ctx, prefix+"_fill/", clientv3.WithPrefix()); err != nil {
		t.Fatal(err)
	}
	harness.Eventually(t, 15*time.Second, answers(b), "the drain applied once the prefix is under its cap")
	if !s.Alive() {
		t.Fatal("coredns exited")
	}
}
