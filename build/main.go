// Command coredns is stock CoreDNS with the healthdns plugin compiled in.
package main

import (
	"github.com/coredns/coredns/core/dnsserver"
	_ "github.com/coredns/coredns/core/plugin" // every stock plugin
	"github.com/coredns/coredns/coremain"

	_ "github.com/healthdns/healthdns" // registers the healthdns directive's setup
)

// anchor is the directive healthdns goes before. hosts comes before file, auto, etcd and
// forward, so healthdns answers its zones and passes every other name on to them, while cache,
// rewrite and acl still run first.
const anchor = "hosts"

func init() { dnsserver.Directives = insertBefore(dnsserver.Directives, anchor, "healthdns") }

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
	keepEarlyReloads() // first: see there why
	coremain.Run()
}
