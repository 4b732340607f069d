package main

import (
	"strings"
	"testing"
	"time"
)

func TestCorefileSpreadsBackends(t *testing.T) {
	addrs := backendAddrs(25)
	if addrs[0] != "127.16.0.1" || addrs[24] != "127.16.0.25" {
		t.Fatalf("addresses %v", addrs)
	}
	conf := Spec{Zones: 10, Addrs: addrs, Check: "tcp", Port: 8080, Interval: time.Second, Timeout: 500 * time.Millisecond, DNSPort: 1053, HTTPPort: 9153}.Corefile()
	if n := strings.Count(conf, "healthdns z"); n != 9 { // 3 per zone: 9 zones hold 25
		t.Errorf("%d zones:\n%s", n, conf)
	}
	if n := strings.Count(conf, "backend 127.16."); n != 25 {
		t.Errorf("%d backends", n)
	}
	if !strings.Contains(conf, "check tcp 8080") || !strings.Contains(conf, "ready 127.0.0.1:9154") {
		t.Errorf("Corefile:\n%s", conf)
	}
}
