package source

import (
	"context"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/healthdns/healthdns/test/harness"
)

// TestEtcdPutLeased: a leased key lives while its writer keeps the lease, goes when the writer
// closes (LeaseTTL later), and a lease that vanished meanwhile (revoked here, as an etcd outage
// longer than LeaseTTL expires it) is granted anew by the next write.
func TestEtcdPutLeased(t *testing.T) {
	e := harness.StartEtcd(t)
	c := e.Client(t)
	src := newSource(t, EtcdConfig{Endpoints: []string{e.Endpoint()}})
	ctx, cancel := context.WithTimeout(context.Background(), 3*LeaseTTL*time.Second)
	defer cancel()
	leaseOf := func(key string) int64 {
		t.Helper()
		r, err := c.Get(ctx, prefix+key)
		if err != nil {
			t.Fatal(err)
		}
		if len(r.Kvs) == 0 {
			return 0
		}
		return r.Kvs[0].Lease
	}

	if _, err := src.PutLeased(ctx, "_view/ipv4/a", `{"healthy":[200]}`); err != nil {
		t.Fatal(err)
	}
	first := leaseOf("_view/ipv4/a")
	if first == 0 {
		t.Fatal("the key was written without a lease")
	}
	// Kept alive past its TTL.
	time.Sleep((LeaseTTL + 1) * time.Second)
	if leaseOf("_view/ipv4/a") != first {
		t.Fatalf("the key lost its lease %x while its writer kept it", first)
	}

	if _, err := c.Revoke(ctx, clientv3.LeaseID(first)); err != nil {
		t.Fatal(err)
	}
	if _, err := src.PutLeased(ctx, "_view/ipv4/a", `{"healthy":[100]}`); err != nil {
		t.Fatalf("a write after the lease was revoked: %v", err)
	}
	second := leaseOf("_view/ipv4/a")
	if second == 0 || second == first {
		t.Fatalf("after the revoke the key's lease is %x (was %x), want a new one", second, first)
	}

	if err := src.Close(); err != nil {
		t.Fatal(err)
	}
	harness.Eventually(t, 3*LeaseTTL*time.Second, func() bool { return leaseOf("_view/ipv4/a") == 0 }, "the key to go with its closed writer's lease")
}
