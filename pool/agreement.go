package pool

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
	Etcd fleetStore // while the source runs; the fleet's drains are written through it too
	ctx  context.Context
	fam  [2]agreedGroup
}

// fleetStore is what the fleet's agreement and drains write through: the etcd source
// (source.Etcd) while it runs. Every write names the revision it expects, or says what it made.
type fleetStore interface {
	CompareAndSwap(ctx context.Context, key string, modRevision int64, value string) (ok bool, current source.KeyValue, err error)
	CompareAndDelete(ctx context.Context, key string, modRevision int64) (bool, error)
	Put(ctx context.Context, key, value string) (revision int64, err error)
	Delete(ctx context.Context, key string) (existed bool, revision int64, err error)
	// PutLeased writes a key that etcd deletes once this server stops keeping its lease
	// alive: its view of the groups, which must not outlive it.
	PutLeased(ctx context.Context, key, value string) (revision int64, err error)
}

type agreedGroup struct {
	known     bool      // the key exists (as of the last list)
	group     uint8     // its value
	rev       int64     // its ModRevision: what a compare-and-swap must name
	proposing bool      // a compare-and-swap is out
	proposed  time.Time // when the last one went out
	retry     time.Time // when a proposal held back by the rate limit goes out; zero for none
	// own says that the serving group is this server's own decision, to be proposed to the
	// fleet with a compare-and-swap on ownRev, the revision of the key when the decision was
	// made, rather than the agreed group adopted: an operator's fail-back, or a switch made
	// while cut off from etcd. A key still at ownRev is what the fleet agreed before that
	// decision, and must not undo it; a key changed since is a newer decision of the fleet,
	// which the lost compare-and-swap reads back and follows.
	own    ownDecision
	ownRev int64

	// wroteRev is the revision of this server's last compare-and-swap that went through,
	// until a list of that revision or later arrives; zero otherwise. A list older than it
	// is not taken for the key (agreed).
	wroteRev int64

	q quorumState // the fleet's views, unless fleet_quorum is any
}

// ownDecision is why a server proposes its serving group instead of adopting the agreed one.
type ownDecision int

const (
	agreedByFleet ownDecision = iota // none: the agreed group is followed
	decidedCutOff                    // a switch made while etcd was unreachable
	failedBack                       // an operator's fail-back through this server's status API
)

// decideOwnLocked records that family fam's serving group is this server's own decision, made
// against the agreement key as last seen. The first reason stands until the fleet settles it.
// Callers hold mu.
func (p *Pool) decideOwnLocked(fam int, why ownDecision) {
	a := &p.agree.fam[fam]
	if a.own == agreedByFleet {
		a.ownRev = a.rev
	}
	if why == failedBack || a.own == agreedByFleet {
		a.own = why
	}
}

func agreementKey(fam int) string { return "_group/" + familyName(fam) }

// agreeing reports whether the pool's serving groups are agreed through etcd.
func (p *Pool) agreeing() bool { return p.cfg.Preempt.Never && p.cfg.Source.Kind == SourceEtcd }

// agreed takes the agreement keys of a list from etcd, of revision rev; the rebuild that
// follows adopts them.
func (p *Pool) agreed(state map[string]source.KeyValue, rev int64) {
	if !p.agreeing() {
		return
	}
	p.mu.Lock()
	for fam := range p.agree.fam {
		kv := state[agreementKey(fam)] // zero when absent: nothing agreed
		if p.quorumDecides() {
			p.takeViewsLocked(fam, state)
		}
		// A list older than the key as this server knows it (its own compare-and-swap
		// answered at a later revision than the watch has brought yet) would bring back the
		// group the fleet just left, and this server would answer it until the watch caught
		// up: a flip back that nopreempt forbids.
		if a := &p.agree.fam[fam]; a.wroteRev != 0 {
			if rev < a.wroteRev {
				continue
			}
			a.wroteRev = 0
		}
		if !p.takeAgreedLocked(fam, kv) {
			log.Errorf("zone %s: etcd key %s%s is %s, not a priority group (1 to 255); proposing this server's choice",
				p.cfg.Zone, p.cfg.Source.Etcd.Prefix, agreementKey(fam), word(kv.Value))
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
	if g == 0 && err == nil && p.quorumDecides() {
		return true // a quorum saw every group down: none agreed, the return goes to the highest
	}
	if err != nil || g < 1 || g > 255 {
		return false
	}
	a.group = uint8(g)
	return true
}

// followAgreementLocked adopts the agreed group of family fam, or proposes this server's own
// serving group when the agreed one has no healthy backend here, or when the serving group is
// this server's own decision (an operator's fail-back, a switch sw made while cut off from
// etcd). Callers hold mu, after the failover's Update, whose switch sw is.
func (p *Pool) followAgreementLocked(fam int, fo *balance.Failover, sw balance.Switch, now time.Time) {
	a := &p.agree.fam[fam]
	if p.agree.Etcd == nil || !p.src.connected {
		// Cut off: the last agreed group serves while it has a healthy backend. A switch made
		// meanwhile is this server's alone, and is reconciled with the fleet when etcd returns:
		// adopting the key as it was before the outage would undo it, which under nopreempt
		// only an operator may.
		if sw.Changed() {
			p.decideOwnLocked(fam, decidedCutOff)
		}
		// What the fleet could not be told: this server saw the agreed group fail.
		if p.quorumDecides() && a.known && a.group != 0 && !fo.Healthy().Has(a.group) && a.q.vote.group == 0 {
			a.q.vote = offVote{group: a.group, rev: a.rev}
		}
		return
	}
	if a.proposing {
		return // its answer says what the fleet agreed
	}
	if p.quorumDecides() {
		p.followQuorumLocked(fam, fo, now)
		return
	}
	serving, _ := fo.Serving()
	if a.known && a.group != 0 && a.group != serving && a.own == agreedByFleet {
		sw := fo.Adopt(a.group, fmt.Sprintf("agreed by the fleet (etcd %s%s, revision %d)", p.cfg.Source.Etcd.Prefix, agreementKey(fam), a.rev))
		if sw.Changed() {
			p.switched(fam, sw)
			return
		}
	}
	a.retry = time.Time{}
	if serving == 0 {
		return
	}
	if a.known && a.group == serving {
		a.own = agreedByFleet // the fleet agrees already
		return
	}
	// Two servers that each see only the other's group healthy would otherwise swap the key
	// back and forth as fast as etcd answers. An operator's fail-back goes out at once.
	if gap := max(time.Second, p.cfg.Spec.Interval); now.Sub(a.proposed) < gap && a.own != failedBack {
		a.retry = a.proposed.Add(gap) // armLocked wakes the pool then
		return
	}
	rev := a.rev
	if a.own != agreedByFleet {
		rev = a.ownRev
	}
	p.proposeLocked(fam, serving, rev, a.own, now)
}

// proposeLocked sends the proposal of group for family fam, against the key's revision rev,
// on a goroutine that stopSource waits for. Callers hold mu.
func (p *Pool) proposeLocked(fam int, group uint8, rev int64, own ownDecision, now time.Time) {
	a := &p.agree.fam[fam]
	a.proposing, a.proposed = true, now
	from := a.group
	e, ctx := p.agree.Etcd, p.agree.ctx
	p.agreeWG.Add(1)
	go func() {
		defer p.agreeWG.Done()
		p.propose(ctx, e, fam, from, rev, group, own)
	}()
}

// propose asks etcd to make group the family's agreed group, if the key is still at rev. own
// says whether group is this server's own decision: a lost race then names the decision that
// won over it.
func (p *Pool) propose(ctx context.Context, e fleetStore, fam int, from uint8, rev int64, group uint8, own ownDecision) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	key := p.cfg.Source.Etcd.Prefix + agreementKey(fam)
	ok, cur, err := e.CompareAndSwap(ctx, agreementKey(fam), rev, strconv.Itoa(int(group)))
	p.mu.Lock()
	a := &p.agree.fam[fam]
	a.proposing = false
	switch {
	case err != nil:
		// What serves is this server's own decision until a proposal goes through, as when it
		// is cut off (etcd may be going away, not noticed yet): the next rebuild (a list, a
		// health change, etcd back) proposes it again, under the rate limit, where adopting
		// the agreed key would undo it.
		a.own, a.ownRev = decidedCutOff, rev
		log.Warningf("zone %s: %s: could not agree on priority group %d through etcd: %v; serving it by this server's own decision",
			p.cfg.Zone, familyName(fam), group, err)
	case ok:
		a.known, a.group, a.rev, a.own, a.wroteRev = true, group, cur.ModRevision, agreedByFleet, cur.ModRevision
		why := ""
		if a.q.why != "" {
			why = ": " + a.q.why
		}
		log.Infof("zone %s: %s: priority group %s agreed for the fleet (etcd %s, was %s)%s", p.cfg.Zone, familyName(fam), groupName(group), key, groupName(from), why)
	default:
		// Another server, or an operator, changed it first: follow it, if it can be followed here.
		p.takeAgreedLocked(fam, cur)
		a.own = agreedByFleet
		if own != agreedByFleet && cur.Value != strconv.Itoa(int(group)) {
			log.Infof("zone %s: %s: etcd %s changed since revision %d, where this server chose group %s %s; following the fleet's %q",
				p.cfg.Zone, familyName(fam), key, rev, groupName(group), own, cur.Value)
		}
	}
	p.mu.Unlock()
	if err == nil {
		p.rebuild()
	}
}

// String says where an own decision was made, for the log.
func (d ownDecision) String() string {
	switch d {
	case decidedCutOff:
		return "while cut off from etcd"
	case failedBack:
		return "by a fail-back"
	}
	return "with the fleet"
}

// agreedStatusLocked is the family's agreement for the status page; nil when not agreeing.
func (p *Pool) agreedStatusLocked(fam int) *Agreement {
	if !p.agreeing() {
		return nil
	}
	a := p.agree.fam[fam]
	st := &Agreement{Key: p.cfg.Source.Etcd.Prefix + agreementKey(fam), Known: a.known, Group: a.group, Revision: a.rev, Connected: p.src.connected}
	if p.quorumDecides() {
		st.Quorum, st.Views, st.Disagrees = p.cfg.Quorum.String(), a.q.live, a.q.disagrees
	}
	return st
}
