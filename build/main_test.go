package main

import (
	"slices"
	"testing"

	"github.com/coredns/caddy"
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/coremain"
)

func TestDirectivePosition(t *testing.T) {
	at := slices.Index(dnsserver.Directives, "healthdns")
	if at < 0 {
		t.Fatal("healthdns is not in dnsserver.Directives")
	}
	if n := len(slices.DeleteFunc(slices.Clone(dnsserver.Directives), func(d string) bool { return d != "healthdns" })); n != 1 {
		t.Fatalf("healthdns appears %d times", n)
	}
	// It must answer before the plugins that serve or forward names, and after those that
	// rewrite, cache or filter queries.
	for _, later := range []string{"hosts", "file", "auto", "etcd", "kubernetes", "forward", "grpc"} {
		if i := slices.Index(dnsserver.Directives, later); i >= 0 && i < at {
			t.Errorf("%s (%d) comes before healthdns (%d)", later, i, at)
		}
	}
	for _, earlier := range []string{"bind", "ready", "prometheus", "log", "cache", "rewrite", "acl"} {
		if i := slices.Index(dnsserver.Directives, earlier); i > at {
			t.Errorf("%s (%d) comes after healthdns (%d)", earlier, i, at)
		}
	}
}

func TestInsertBeforeMissingAnchor(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Fatal("no panic for a missing anchor")
		}
	}()
	insertBefore([]string{"a", "b"}, "c", "healthdns")
}

// init appends healthdns's version to the one coremain set, which -version and the startup
// banner print (deploy's TestVersionDev and TestRelease run the binary).
func TestAppVersion(t *testing.T) {
	if want := coremain.CoreVersion + "+healthdns-" + version; caddy.AppVersion != want {
		t.Errorf("caddy.AppVersion = %q, want %q", caddy.AppVersion, want)
	}
}
