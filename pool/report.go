package pool

import (
	"net/netip"

	"github.com/healthdns/healthdns/health"
)

// Why a report is refused, the reason label of coredns_healthdns_reports_refused_total.
const (
	ReportUnlisted = "unlisted" // the zone lists no such backend
	ReportNoPush   = "no_push"  // the zone has no push check
)

// Report is what a backend, or an agent on it, says of itself to a push check.
type Report struct {
	Pass   bool
	Output string // one line, as the status API keeps it
}

// Report feeds a report of backend addr to the zone's push check, which decides, as a probe's
// result would, through rise and fall. It returns whether the check is up after it. A report of
// a backend the zone does not list, or to a zone without a push check, is refused and counted:
// a node that reports to the wrong zone, or after it was taken out of the list, should show.
func (p *Pool) Report(addr netip.Addr, r Report, by string) (up bool, err error) {
	lease, err := p.pushLease(addr)
	if err != nil {
		return false, err
	}
	// Outside mu: the report's change makes the pool rebuild, which takes it.
	if err := lease.Report(r.Pass, r.Output); err != nil {
		return false, refuse(Unavailable, "zone %s: backend %s: %v", p.cfg.Zone, addr, err)
	}
	return lease.Up(), nil
}

// ReportToken is the token the zone's push check takes for reports, "" for none.
func (p *Pool) ReportToken() string { return p.cfg.ReportToken }

func (p *Pool) pushLease(addr netip.Addr) (*health.Lease, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := p.runningLocked(); err != nil {
		return nil, err
	}
	check := -1
	for i, c := range p.cfg.Checks {
		if c.Kind == health.Push {
			check = i
		}
	}
	if check < 0 {
		p.metrics.ReportsRefusedTotal.WithLabelValues(p.cfg.Server, p.cfg.Zone, ReportNoPush).Inc()
		return nil, refuse(Conflict, "zone %s has no push check: want 'check push TTL' in its block for reports", p.cfg.Zone)
	}
	m := p.memberLocked(addr)
	if m == nil {
		p.metrics.ReportsRefusedTotal.WithLabelValues(p.cfg.Server, p.cfg.Zone, ReportUnlisted).Inc()
		return nil, refuse(NotFound, "zone %s has no backend %s: a report counts only for a backend the zone lists", p.cfg.Zone, addr)
	}
	return m.leases[check], nil
}
