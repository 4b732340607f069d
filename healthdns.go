// Package healthdns is a CoreDNS plugin that answers A and AAAA queries for a zone, and every
// name below it, with the addresses of backends that pass their health checks.
package healthdns

import (
	"context"
	"net"
	"net/netip"
	"strings"

	"github.com/coredns/coredns/plugin"
	"github.com/miekg/dns"

	"github.com/healthdns/healthdns/balance"
	"github.com/healthdns/healthdns/health"
	"github.com/healthdns/healthdns/pool"
)

// HealthDNS is the handler. It only answers: the pools keep the health state, and the query
// path reads their snapshots without locks or I/O.
type HealthDNS struct {
	Next  plugin.Handler
	pools map[string]*zonePool // by zone, lower case and fully qualified
}

// zonePool is one zone: its configuration, its synthesized records, and the pool whose snapshot
// its address queries are answered from.
type zonePool struct {
	cfg    poolConfig
	zone   zoneRecords
	policy balance.Policy
	pool   *pool.Pool
}

func newZonePool(cfg poolConfig, reg *health.Registry) *zonePool {
	policy, _ := balance.New(cfg.Policy) // parse validated the name
	cfg.Events = proc.events()
	z := &zonePool{cfg: cfg, policy: policy, pool: pool.New(cfg.Config, reg, poolMetrics)}
	z.zone = newZoneRecords(&z.cfg, configSerial(&z.cfg))
	return z
}

// familyOf is the index of addr's family in a pool's per-family state: ipv4, then ipv6.
func familyOf(addr netip.Addr) int {
	if addr.Is4() {
		return 0
	}
	return 1
}

// Name implements plugin.Handler. It must equal the directive for the ready plugin to find it.
func (h *HealthDNS) Name() string { return pluginName }

// Ready implements ready.Readiness: true once every backend has had its first probe. The ready
// plugin stops asking after the first true, so this is not a health summary.
func (h *HealthDNS) Ready() bool {
	for _, p := range h.pools {
		if !p.pool.Ready() {
			return false
		}
	}
	return true
}

// ServeDNS implements plugin.Handler. For a name in one of its zones:
//
//   - A and AAAA are healthdns's, whatever else serves the zone: the NS host gets this server's
//     addresses, every other name the backends'. A family with no backend up has no answer (a
//     NODATA, as below), and all_down decides only when the whole pool is down (see family).
//   - ANY gets the HINFO that RFC 8482 §4.2 suggests (the any plugin answers with one too).
//     AXFR and IXFR are refused: the zone's addresses are not records a secondary could copy.
//   - SOA and NS at the apex, and the NODATA of everything else (with the SOA), are healthdns's
//     synthesized records, unless fallthrough covers the name: then the next plugin owns them
//     (a zone file beside the pool), so that one zone never shows two SOAs. Without a next
//     plugin, fallthrough has no one to defer to, and healthdns answers as without it.
//   - Whatever the next plugin answers for such a name (fallthrough, or all_down fallthrough),
//     an NXDOMAIN becomes NODATA: the name exists, since its addresses are answered, and a stub
//     resolver that sees NXDOMAIN for AAAA discards the A as well (musl's getaddrinfo does).
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
	switch q.Qtype {
	case dns.TypeA, dns.TypeAAAA:
		if qname == cfg.nsName {
			m.Answer = p.zone.nsAddresses(q.Name, q.Qtype)
			break
		}
		snap := p.pool.Snapshot()
		fam := &snap.V4
		if q.Qtype == dns.TypeAAAA {
			fam = &snap.V6
		}
		if fam.AllDown {
			switch cfg.AllDown {
			case pool.AllDownServfail:
				return dns.RcodeServerFailure, nil
			case pool.AllDownFallthrough:
				return h.passOn(ctx, w, r)
			}
		}
		var picks balance.Picks
		if fam.Hash != nil {
			key := p.clientKey(w, r, m)
			picks = fam.Hash.Pick(key[:], cfg.answers)
		} else {
			picks = p.policy.Pick(fam.Set, cfg.answers)
		}
		m.Answer = addressRecords(q, fam, picks, cfg.ttl)
	case dns.TypeANY:
		m.Answer = []dns.RR{&dns.HINFO{
			Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeHINFO, Class: dns.ClassINET, Ttl: cfg.ttl},
			Cpu: "RFC8482",
		}}
	case dns.TypeAXFR, dns.TypeIXFR:
		m.Authoritative = false
		m.Rcode = dns.RcodeRefused
		w.WriteMsg(m) // written here, as the transfer plugin does, so that log shows the refusal
		return dns.RcodeSuccess, nil
	case dns.TypeSOA:
		if qname == cfg.Zone && !h.deferred(cfg, qname) {
			m.Answer = []dns.RR{p.zone.soaFor(q.Name)}
		}
	case dns.TypeNS:
		if qname == cfg.Zone && !h.deferred(cfg, qname) {
			m.Answer = []dns.RR{p.zone.nsFor(q.Name)}
			m.Extra = p.zone.glue
		}
	}

	if len(m.Answer) == 0 {
		if h.deferred(cfg, qname) {
			return h.passOn(ctx, w, r)
		}
		m.Ns = p.zone.authority // NODATA: the SOA tells resolvers how long to cache the absence
	}
	w.WriteMsg(m)
	return dns.RcodeSuccess, nil
}

// clientKey returns the key a consistent_hash answer follows: the client's subnet when the query
// carries one (EDNS Client Subnet, RFC 7871: a forwarder sends the subnet of the client it asks
// for), else the client's own address; either masked to hash_prefix. With ECS, the reply carries
// it back with SCOPE set to the prefix length used, so that a caching resolver caches the answer
// for that subnet alone (RFC 7871 §7.2.1).
func (p *zonePool) clientKey(w dns.ResponseWriter, r *dns.Msg, m *dns.Msg) [balance.ClientKeyLen]byte {
	if ecs := clientSubnet(r); ecs != nil {
		addr, ok := netip.AddrFromSlice(ecs.Address)
		addr = addr.Unmap()
		bits := 0
		// A source prefix of 0 asks that no subnet be used (RFC 7871 §7.1.2): the answer is
		// then the forwarder's, for every client behind it, and says so with SCOPE 0.
		if ok && ecs.SourceNetmask > 0 {
			bits = min(int(ecs.SourceNetmask), p.cfg.hashPrefix[familyOf(addr)])
		}
		reply := *ecs
		reply.SourceScope = uint8(bits)
		m.SetEdns0(r.IsEdns0().UDPSize(), r.IsEdns0().Do())
		ropt := m.IsEdns0()
		ropt.Option = append(ropt.Option, &reply)
		if bits > 0 {
			return balance.ClientKey(addr, bits)
		}
	}
	var addr netip.Addr
	switch a := w.RemoteAddr().(type) {
	case *net.UDPAddr:
		addr, _ = netip.AddrFromSlice(a.IP)
	case *net.TCPAddr:
		addr, _ = netip.AddrFromSlice(a.IP)
	}
	addr = addr.Unmap()
	return balance.ClientKey(addr, p.cfg.hashPrefix[familyOf(addr)])
}

// clientSubnet returns the query's EDNS Client Subnet option, if it has a well-formed one.
func clientSubnet(r *dns.Msg) *dns.EDNS0_SUBNET {
	opt := r.IsEdns0()
	if opt == nil {
		return nil
	}
	for _, o := range opt.Option {
		if ecs, ok := o.(*dns.EDNS0_SUBNET); ok && (ecs.Family == 1 || ecs.Family == 2) {
			return ecs
		}
	}
	return nil
}

// deferred reports whether the next plugin owns qname's SOA, NS and other types.
func (h *HealthDNS) deferred(cfg *poolConfig, qname string) bool {
	return h.Next != nil && cfg.fall.Through(qname)
}

// passOn hands a query for a name in one of the zones to the next plugin, which must not deny
// that the name exists.
func (h *HealthDNS) passOn(ctx context.Context, w dns.ResponseWriter, r *dns.Msg) (int, error) {
	nw := &existingNames{ResponseWriter: w, h: h}
	rcode, err := plugin.NextOrFailure(h.Name(), h.Next, ctx, nw, r)
	if nw.rewrote && rcode == dns.RcodeNameError {
		rcode = dns.RcodeSuccess
	}
	return rcode, err
}

// existingNames writes the next plugin's reply with its NXDOMAIN turned into NODATA when the
// name it denies lies in a zone of healthdns. The authority section stays the next plugin's:
// its SOA is the zone's when fallthrough hands the zone to it.
type existingNames struct {
	dns.ResponseWriter
	h       *HealthDNS
	rewrote bool
}

// WriteMsg implements dns.ResponseWriter.
func (w *existingNames) WriteMsg(m *dns.Msg) error {
	if m.Rcode == dns.RcodeNameError && len(m.Question) == 1 && w.h.match(strings.ToLower(deniedName(m))) != nil {
		m.Rcode = dns.RcodeSuccess
		w.rewrote = true
	}
	return w.ResponseWriter.WriteMsg(m)
}

// deniedName is the name an NXDOMAIN is about: the question's, or the end of the CNAME chain in
// the answer (RFC 6604), which may lie outside the zone.
func deniedName(m *dns.Msg) string {
	name := m.Question[0].Name
	for _, rr := range m.Answer {
		if c, ok := rr.(*dns.CNAME); ok && strings.EqualFold(c.Hdr.Name, name) {
			name = c.Target
		}
	}
	return name
}

// match returns the pool of the most specific zone that contains qname, walking its labels
// from the longest suffix so the cost does not grow with the number of zones.
func (h *HealthDNS) match(qname string) *zonePool {
	for off, end := 0, false; !end; off, end = dns.NextLabel(qname, off) {
		if p, ok := h.pools[qname[off:]]; ok {
			return p
		}
	}
	return h.pools["."]
}

// addressRecords builds the answer from the picked indexes. All records come from one
// allocation, and the addresses are shared, immutable slices made when the snapshot was built.
func addressRecords(q dns.Question, fam *pool.Family, picks balance.Picks, ttl uint32) []dns.RR {
	if picks.N == 0 {
		return nil
	}
	rrs := make([]dns.RR, picks.N)
	hdr := dns.RR_Header{Name: q.Name, Rrtype: q.Qtype, Class: dns.ClassINET, Ttl: ttl}
	if q.Qtype == dns.TypeA {
		recs := make([]dns.A, picks.N)
		for i := range recs {
			idx := picks.Idx[i]
			recs[i] = dns.A{Hdr: hdr, A: fam.IPs[idx]}
			rrs[i] = &recs[i]
			fam.Answered[idx].Inc()
		}
		return rrs
	}
	recs := make([]dns.AAAA, picks.N)
	for i := range recs {
		idx := picks.Idx[i]
		recs[i] = dns.AAAA{Hdr: hdr, AAAA: fam.IPs[idx]}
		rrs[i] = &recs[i]
		fam.Answered[idx].Inc()
	}
	return rrs
}
