package harness

import (
	"context"
	"testing"
	"time"
)

// A stopped server refuses reads, and once started again on the same ports it serves the data
// written before the stop: the outage tests of the etcd source rest on both.
func TestEtcdStopStartKeepsData(t *testing.T) {
	e := StartEtcd(t)
	c := e.Client(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := c.Put(ctx, "/healthdns/kept", "10.0.0.1"); err != nil {
		t.Fatal(err)
	}

	e.Stop()
	short, cancelShort := context.WithTimeout(ctx, 500*time.Millisecond)
	_, err := c.Get(short, "/healthdns/kept")
	cancelShort()
	if err == nil {
		t.Fatal("a read of a stopped etcd succeeded")
	}

	e.Start()
	r, err := c.Get(ctx, "/healthdns/kept")
	if err != nil {
		t.Fatalf("read after restart: %v", err)
	}
	if len(r.Kvs) != 1 || string(r.Kvs[0].Value) != "10.0.0.1" {
		t.Fatalf("after restart /healthdns/kept = %v, want 10.0.0.1", r.Kvs)
	}
}
