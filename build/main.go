// Command coredns is stock CoreDNS with the healthdns plugin compiled in.
package main

import (
	"os"

	"github.com/coredns/caddy"
	"github.com/coredns/coredns/core/dnsserver"
	_ "github.com/coredns/coredns/core/plugin" // every stock plugin
	"github.com/coredns/coredns/coremain"

	_ "github.com/healthdns/healthdns" // registers the healthdns directive's setup
)

// anchor is the directive healthdns goes before. hosts comes before file, auto, etcd and
// forward, so healthdns answers its zones and passes every other name on to them, while cache,
// rewrite and acl still run first.
const anchor = "hosts"

// version is healthdns's release, stamped at link time by deploy/release.sh
// (-ldflags "-X main.version=v0.2.0"); a plain go build is "dev".
var version = "dev"

func init() {
	dnsserver.Directives = insertBefore(dnsserver.Directives, anchor, "healthdns")
	// coremain's init, which runs before this one, set AppVersion to CoreDNS's release. Appending
	// ours as semver build metadata puts both in -version, the startup banner, CHAOS
	// version.bind and dnstap, without changing the CoreDNS-1.14.7 prefix people grep for.
	caddy.AppVersion = appVersion(caddy.AppVersion, version)
}

// appVersion is CoreDNS's version with healthdns's appended: 1.14.7+healthdns-v0.2.0.
func appVersion(core, healthdns string) string { return core + "+healthdns-" + healthdns }

// insertBefore returns directives with name placed before anchor. A CoreDNS without the anchor
// would silently change what healthdns sits behind, so it panics at build-test time instead.
func insertBefore(directives []string, anchor, name string) []string {
	for i, d := range directives {
		if d == anchor {
			out := make([]string, 0, len(directives)+1)
			out = append(out, directives[:i]...)
			out = append(out, name)
			return append(out, directives[i:]...)
		}
	}
	panic("healthdns: directive " + anchor + " not found in dnsserver.Directives")
}

func main() {
	if ran, code := checkCorefile(os.Stdout, os.Stderr); ran {
		os.Exit(code)
	}
	keepEarlyReloads() // first: see there why
	coremain.Run()
}
