package healthdns

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/healthdns/healthdns/balance"
	"github.com/healthdns/healthdns/source"
)

// agreement is how a fleet of servers under nopreempt, sharing one etcd prefix, answers from one
// priority group per family: the group is a key under the prefix (_group/ipv4, _group/ipv6),
// changed only by compare-and-swap on its revision. A server adopts the agreed group while it
// has a healthy backend there, and proposes its own choice when the agreed group has none here
// (or nothing is agreed yet). Moving down to a standby thus spreads to the whole fleet, and
// nopreempt keeps every server there: a primary that one server sees flapping does not split
// clients between primary and standby. Guarded by Pool.mu.
type agreement struct {
	etcd *source.Etcd // while the source runs
	ctx  context.Context
	fam  [2]agreedGroup
}

type agreedGroup struct {
	known     bool      // the key exists (as of the last list)
	group     uint8     // its value
	rev       int64     // its ModRevision: what a compare-and-swap must name
	proposing bool      // a compare-and-swap is out
	proposed  time.Time // when the last one went out
	retry     time.Time // when a proposal held back by the rate limit goes out; zero for none
	failBack  bool      // an operator's fail-back: propose it to the fleet rather than adopt the agreed group
}

func agreementKey(fam int) string { return "_group/" + familyName(fam) }

// agreeing reports whether the pool's serving groups are agreed through etcd.
func (p *Pool) agreeing() bool { return p.cfg.preempt.Never && p.cfg.source.kind == sourceEtcd }

// agreed takes the agreement keys of a list from etcd; the rebuild that follows adopts them.
func (p *Pool) agreed(state map[string]source.KeyValue) {
	if !p.agreeing() {
		return
	}
	p.mu.Lock()
	for fam := range p.agree.fam {
		kv := state[agreementKey(fam)] // zero when absent: nothing agreed
		if !p.takeAgreedLocked(fam, kv) {
			log.Errorf("zone %s: etcd key %s%s is %q, not a priority group (1 to 255); proposing this server's choice",
				p.cfg.zone, p.cfg.source.etcd.prefix, agreementKey(fam), kv.Value)
		}
	}
	p.mu.Unlock()
	p.rebuild()
}

// takeAgreedLocked records the agreement key's value and revision, as etcd has them: a zero
// ModRevision for a key that does not exist. A value that is not a group (1 to 255) records
// group 0, which is never adopted, and returns false. Callers hold mu.
func (p *Pool) takeAgreedLocked(fam int, kv source.KeyValue) bool {
	a := &p.agree.fam[fam]
	a.known, a.group, a.rev = kv.ModRevision != 0, 0, kv.ModRevision
	if !a.known {
		return true
	}
	g, err := strconv.Atoi(kv.Value)
	if err != nil || g < 1 || g > 255 {
		return false
	}
	a.group = uint8(g)
	return true
}

// followAgreementLocked adopts the agreed group of family fam, or proposes this server's own
// serving group when the agreed one has no healthy backend here. Callers hold mu, after the
// failover's Update.
func (p *Pool) followAgreementLocked(fam int, fo *balance.Failover, now time.Time) {
	a := &p.agree.fam[fam]
	if p.agree.etcd == nil || !p.src.connected {
		return // cut off: the last agreed group serves while it has a healthy backend
	}
	serving, _ := fo.Serving()
	if a.known && a.group != 0 && a.group != serving && !a.failBack {
		sw := fo.Adopt(a.group, fmt.Sprintf("agreed by the fleet (etcd %s%s, revision %d)", p.cfg.source.etcd.prefix, agreementKey(fam), a.rev))
		if sw.Changed() {
			p.switched(fam, sw)
			return
		}
	}
	a.retry = time.Time{}
	if serving == 0 || a.known && a.group == serving || a.proposing {
		return
	}
	// Two servers that each see only the other's group healthy would otherwise swap the key
	// back and forth as fast as etcd answers. An operator's fail-back goes out at once.
	if gap := max(time.Second, p.cfg.spec.Interval); now.Sub(a.proposed) < gap && !a.failBack {
		a.retry = a.proposed.Add(gap) // armLocked wakes the pool then
		return
	}
	a.proposing, a.proposed, a.failBack = true, now, false
	from, rev := a.group, a.rev
	e, ctx := p.agree.etcd, p.agree.ctx
	p.agreeWG.Add(1)
	go func() {
		defer p.agreeWG.Done()
		p.propose(ctx, e, fam, from, rev, serving)
	}()
}

// propose asks etcd to make group the family's agreed group, if the key is still at rev.
func (p *Pool) propose(ctx context.Context, e *source.Etcd, fam int, from uint8, rev int64, group uint8) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	key := p.cfg.source.etcd.prefix + agreementKey(fam)
	ok, cur, err := e.CompareAndSwap(ctx, agreementKey(fam), rev, strconv.Itoa(int(group)))
	p.mu.Lock()
	a := &p.agree.fam[fam]
	a.proposing = false
	switch {
	case err != nil:
		log.Warningf("zone %s: %s: could not agree on priority group %d through etcd: %v; serving it by this server's own decision",
			p.cfg.zone, familyName(fam), group, err)
	case ok:
		a.known, a.group, a.rev = true, group, cur.ModRevision
		log.Infof("zone %s: %s: priority group %s agreed for the fleet (etcd %s, was %s)", p.cfg.zone, familyName(fam), groupName(group), key, groupName(from))
	default:
		// Another server changed it first: follow it, if it can be followed here.
		p.takeAgreedLocked(fam, cur)
	}
	p.mu.Unlock()
	if err == nil {
		p.rebuild()
	}
}

// agreedStatusLocked is the family's agreement for the status page; nil when not agreeing.
func (p *Pool) agreedStatusLocked(fam int) *statusAgreement {
	if !p.agreeing() {
		return nil
	}
	a := p.agree.fam[fam]
	return &statusAgreement{Key: p.cfg.source.etcd.prefix + agreementKey(fam), Known: a.known, Group: a.group, Revision: a.rev, Connected: p.src.connected}
}

type statusAgreement struct {
	Key       string `json:"key"`
	Known     bool   `json:"known"`
	Group     uint8  `json:"group,omitempty"`
	Revision  int64  `json:"revision,omitempty"`
	Connected bool   `json:"connected"`
}
