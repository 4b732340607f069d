package harness

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"os"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
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

// A TLS server serves the client certificate of its CA, and refuses a client that presents
// none: the TLS tests of the etcd source rest on both.
func TestEtcdTLS(t *testing.T) {
	e, files := StartEtcdTLS(t)
	if !strings.HasPrefix(e.Endpoint(), "https://127.0.0.1:") {
		t.Errorf("endpoint %s, want https://127.0.0.1:PORT", e.Endpoint())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := e.Client(t).Put(ctx, "/healthdns/tls", "10.0.0.1"); err != nil {
		t.Fatalf("put with the client certificate: %v", err)
	}

	roots := x509.NewCertPool()
	pem, err := os.ReadFile(files.CA)
	if err != nil || !roots.AppendCertsFromPEM(pem) {
		t.Fatalf("CA file %s: %v", files.CA, err)
	}
	anonymous, err := clientv3.New(clientv3.Config{Endpoints: []string{e.Endpoint()}, TLS: &tls.Config{RootCAs: roots}, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer anonymous.Close()
	short, cancelShort := context.WithTimeout(ctx, time.Second)
	defer cancelShort()
	if _, err := anonymous.Get(short, "/healthdns/tls"); err == nil {
		t.Error("a client without a certificate read the key")
	}
}
