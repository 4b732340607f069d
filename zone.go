package healthdns

import (
	"fmt"
	"hash/fnv"
	"net"
	"time"

	"github.com/coredns/coredns/plugin/pkg/dnsutil"
	"github.com/miekg/dns"
)

// SOA timers. No secondary ever transfers these zones, so they matter only to zone checkers;
// they follow RIPE-203 (and RFC 1912 §2.2), which Zonemaster and its kin expect. The minimum,
// the negative-caching TTL (RFC 2308), is the zone's ttl so a NODATA is not cached longer than
// an answer.
const (
	soaRefresh = 86400
	soaRetry   = 7200
	soaExpire  = 3600000
)

// zoneRecords are a zone's synthesized SOA and NS and the addresses of its NS host, built once.
type zoneRecords struct {
	soa       *dns.SOA
	ns        *dns.NS
	authority []dns.RR // the SOA, for NODATA answers
	glue      []dns.RR // the NS host's addresses when it lies in the zone
	nsA       []net.IP
	nsAAAA    []net.IP
}

func newZoneRecords(cfg *poolConfig, serial uint32) zoneRecords {
	hdr := func(name string, t uint16) dns.RR_Header {
		return dns.RR_Header{Name: name, Rrtype: t, Class: dns.ClassINET, Ttl: cfg.ttl}
	}
	z := zoneRecords{
		soa: &dns.SOA{
			Hdr:     hdr(cfg.Zone, dns.TypeSOA),
			Ns:      cfg.nsName,
			Mbox:    dnsutil.Join("hostmaster", cfg.Zone),
			Serial:  serial,
			Refresh: soaRefresh,
			Retry:   soaRetry,
			Expire:  soaExpire,
			Minttl:  cfg.ttl,
		},
		ns: &dns.NS{Hdr: hdr(cfg.Zone, dns.TypeNS), Ns: cfg.nsName},
	}
	z.authority = []dns.RR{z.soa}
	for _, a := range cfg.nsAddrs {
		if a.Is4() {
			z.nsA = append(z.nsA, net.IP(a.AsSlice()))
		} else {
			z.nsAAAA = append(z.nsAAAA, net.IP(a.AsSlice()))
		}
	}
	if dns.IsSubDomain(cfg.Zone, cfg.nsName) {
		z.glue = append(z.nsAddresses(cfg.nsName, dns.TypeA), z.nsAddresses(cfg.nsName, dns.TypeAAAA)...)
	}
	return z
}

// configSerial is the zone's SOA serial: a hash (FNV-32a) of everything that shapes its answers,
// so every instance that runs the same configuration shows the same serial, and a change shows
// a different one. It does not grow as RFC 1982 would have it; that only matters to secondaries,
// and no secondary can transfer these zones (AXFR is refused). The NS host's addresses are the
// ones served: instances bound to different addresses serve different NS host records, and show
// different serials unless `ns` lists them all.
func configSerial(cfg *poolConfig) uint32 {
	h := fnv.New32a()
	fmt.Fprintf(h, "zone %s\n", cfg.Zone)
	for _, b := range cfg.Backends {
		fmt.Fprintf(h, "backend %s weight %d priority %d", b.Addr, b.Weight, b.Priority)
		// Only when drained, so that a configuration without drains keeps its serial.
		if d := b.Drain; d.On {
			fmt.Fprintf(h, " drain until %s %q", d.Until.Format(time.RFC3339Nano), d.Reason)
		}
		fmt.Fprintln(h)
	}
	fmt.Fprintf(h, "checks %+v\nspec %+v\npolicy %s\nanswers %d\nttl %d\nall_down %s\nns %s",
		cfg.Checks, cfg.Spec, cfg.Policy, cfg.answers, cfg.ttl, cfg.AllDown, cfg.nsName)
	for _, a := range cfg.nsAddrs {
		fmt.Fprintf(h, " %s", a)
	}
	fmt.Fprintf(h, "\nfallthrough %q\npreempt %+v\nhash_prefix %v\n", cfg.fall.Zones, cfg.Preempt, cfg.hashPrefix)
	if s := h.Sum32(); s != 0 {
		return s
	}
	return 1 // serial 0 reads as "unset" to zone checkers
}

// soaFor and nsFor copy the record so the answer echoes the question's case.
func (z *zoneRecords) soaFor(name string) dns.RR {
	soa := *z.soa
	soa.Hdr.Name = name
	return &soa
}

func (z *zoneRecords) nsFor(name string) dns.RR {
	ns := *z.ns
	ns.Hdr.Name = name
	return &ns
}

// nsAddresses answers the NS host's name with the DNS server's own addresses, never a backend's,
// so the zone's delegation is coherent.
func (z *zoneRecords) nsAddresses(name string, qtype uint16) []dns.RR {
	hdr := dns.RR_Header{Name: name, Rrtype: qtype, Class: dns.ClassINET, Ttl: z.soa.Hdr.Ttl}
	var rrs []dns.RR
	if qtype == dns.TypeA {
		for _, ip := range z.nsA {
			rrs = append(rrs, &dns.A{Hdr: hdr, A: ip})
		}
		return rrs
	}
	for _, ip := range z.nsAAAA {
		rrs = append(rrs, &dns.AAAA{Hdr: hdr, AAAA: ip})
	}
	return rrs
}
