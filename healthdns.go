// Package healthdns is a CoreDNS plugin that answers A and AAAA queries for a zone, and every
// name below it, with the addresses of backends that pass their health checks.
package healthdns

import (
	"context"
	"strings"

	"github.com/coredns/coredns/plugin"
	"github.com/miekg/dns"

	"github.com/healthdns/healthdns/balance"
)

// HealthDNS is the handler. It only answers: the pools keep the health state, and the query
// path reads their snapshots without locks or I/O.
type HealthDNS struct {
	Next  plugin.Handler
	pools map[string]*Pool // by zone, lower case and fully qualified
}

// Name implements plugin.Handler. It must equal the directive for the ready plugin to find it.
func (h *HealthDNS) Name() string { return pluginName }

// Ready implements ready.Readiness: true once every backend has had its first probe. The ready
// plugin stops asking after the first true, so this is not a health summary.
func (h *HealthDNS) Ready() bool {
	for _, p := range h.pools {
		if !p.Ready() {
			return false
		}
	}
	return true
}

// ServeDNS implements plugin.Handler.
func (h *HealthDNS) ServeDNS(ctx context.Context, w dns.ResponseWriter, r *dns.Msg) (int, error) {
	if len(r.Question) != 1 || r.Question[0].Qclass != dns.ClassINET {
		return plugin.NextOrFailure(h.Name(), h.Next, ctx, w, r)
	}
	q := r.Question[0]
	qname := strings.ToLower(q.Name)
	p := h.match(qname)
	if p == nil {
		return plugin.NextOrFailure(h.Name(), h.Next, ctx, w, r)
	}
	cfg := &p.cfg

	m := new(dns.Msg)
	m.SetReply(r)
	m.Authoritative = true
	isAddr := q.Qtype == dns.TypeA || q.Qtype == dns.TypeAAAA
	switch {
	case isAddr && qname == cfg.nsName:
		m.Answer = p.zone.nsAddresses(q.Name, q.Qtype)
	case isAddr:
		snap := p.snap.Load()
		fam := &snap.v4
		if q.Qtype == dns.TypeAAAA {
			fam = &snap.v6
		}
		if fam.allDown {
			switch cfg.allDown {
			case allDownServfail:
				return dns.RcodeServerFailure, nil
			case allDownFallthrough:
				return plugin.NextOrFailure(h.Name(), h.Next, ctx, w, r)
			}
		}
		m.Answer = addressRecords(q, fam, p.policy.Pick(fam.set, cfg.answers), cfg.ttl)
	case qname == cfg.zone && q.Qtype == dns.TypeSOA:
		m.Answer = []dns.RR{p.zone.soaFor(q.Name)}
	case qname == cfg.zone && q.Qtype == dns.TypeNS:
		m.Answer = []dns.RR{p.zone.nsFor(q.Name)}
		m.Extra = p.zone.glue
	}

	if len(m.Answer) == 0 {
		if cfg.fall.Through(qname) {
			return plugin.NextOrFailure(h.Name(), h.Next, ctx, w, r)
		}
		m.Ns = p.zone.authority // NODATA: the SOA tells resolvers how long to cache the absence
	}
	w.WriteMsg(m)
	return dns.RcodeSuccess, nil
}

// match returns the pool of the most specific zone that contains qname, walking its labels
// from the longest suffix so the cost does not grow with the number of zones.
func (h *HealthDNS) match(qname string) *Pool {
	for off, end := 0, false; !end; off, end = dns.NextLabel(qname, off) {
		if p, ok := h.pools[qname[off:]]; ok {
			return p
		}
	}
	return h.pools["."]
}

// addressRecords builds the answer from the picked indexes. All records come from one
// allocation, and the addresses are shared, immutable slices made when the snapshot was built.
func addressRecords(q dns.Question, fam *family, picks balance.Picks, ttl uint32) []dns.RR {
	if picks.N == 0 {
		return nil
	}
	rrs := make([]dns.RR, picks.N)
	hdr := dns.RR_Header{Name: q.Name, Rrtype: q.Qtype, Class: dns.ClassINET, Ttl: ttl}
	if q.Qtype == dns.TypeA {
		recs := make([]dns.A, picks.N)
		for i := range recs {
			idx := picks.Idx[i]
			recs[i] = dns.A{Hdr: hdr, A: fam.ips[idx]}
			rrs[i] = &recs[i]
			fam.answered[idx].Inc()
		}
		return rrs
	}
	recs := make([]dns.AAAA, picks.N)
	for i := range recs {
		idx := picks.Idx[i]
		recs[i] = dns.AAAA{Hdr: hdr, AAAA: fam.ips[idx]}
		rrs[i] = &recs[i]
		fam.answered[idx].Inc()
	}
	return rrs
}
