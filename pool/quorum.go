package pool

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/healthdns/healthdns/balance"
	"github.com/healthdns/healthdns/source"
)

// Quorum is how many of the fleet's live views must see the agreed group with no healthy
// backend before the fleet moves off it (fleet_quorum). The zero value is a majority of the
// live views; Any is one view, the agreement without views (each server proposes its own
// choice when it sees the agreed group dead).
type Quorum struct {
	N   int // a fixed number of views; 0 for a majority
	Any bool
}

// of is the number of views, of live, that decides.
func (q Quorum) of(live int) int {
	switch {
	case q.Any:
		return 1
	case q.N > 0:
		return q.N
	}
	return live/2 + 1
}

func (q Quorum) String() string {
	switch {
	case q.Any:
		return "any"
	case q.N > 0:
		return strconv.Itoa(q.N)
	}
	return "majority"
}

// fleetView is one server's view of a family's priority groups, the value of its key
// PREFIX_view/FAMILY/ID, bound to the server's etcd lease: etcd deletes it LeaseTTL after the
// server dies or loses etcd, so only the views of live, connected servers count.
type fleetView struct {
	Healthy []uint8 `json:"healthy"` // the groups with a healthy backend from this server, highest first
	// Off is the agreed group, at the key's revision OffRevision, that this server saw with no
	// healthy backend while it was cut off from etcd and could not say so: a vote to move off
	// it even if it has recovered since, which a quorum of such votes carries when etcd
	// returns (nopreempt across an etcd outage). 0 for none.
	Off         uint8 `json:"off,omitempty"`
	OffRevision int64 `json:"off_revision,omitempty"`
	// Serving is the group this server answers from (0 for none): the fleet's first choice,
	// with nothing agreed yet, is the one a quorum serves.
	Serving uint8 `json:"serving,omitempty"`
}

func (v fleetView) healthy(g uint8) bool {
	for _, h := range v.Healthy {
		if h == g {
			return true
		}
	}
	return false
}

// seesDown reports whether the view counts toward moving off group g, agreed at revision rev.
func (v fleetView) seesDown(g uint8, rev int64) bool {
	return !v.healthy(g) || (v.Off == g && v.OffRevision == rev)
}

// quorumDecision is what the fleet's views say of the agreed group (0 for none agreed, or the
// fleet all down), at the key's revision rev, with need views deciding: stay on it, or move to
// target, the highest other group that need views see healthy (0 for none).
func quorumDecision(views []fleetView, agreed uint8, rev int64, need int) (stay bool, target uint8) {
	if agreed != 0 {
		down := 0
		for _, v := range views {
			if v.seesDown(agreed, rev) {
				down++
			}
		}
		if down < need {
			return true, 0
		}
	}
	for g := 255; g > 0; g-- {
		if uint8(g) == agreed {
			continue
		}
		if seenHealthy(views, uint8(g)) >= need {
			return false, uint8(g)
		}
	}
	return false, 0
}

// servedByQuorum is the highest group that need views serve, 0 for none.
func servedByQuorum(views []fleetView, need int) uint8 {
	count := map[uint8]int{}
	best := uint8(0)
	for _, v := range views {
		if v.Serving == 0 {
			continue
		}
		if count[v.Serving]++; count[v.Serving] >= need && v.Serving > best {
			best = v.Serving
		}
	}
	return best
}

// seenHealthy is how many views see group g healthy.
func seenHealthy(views []fleetView, g uint8) int {
	n := 0
	for _, v := range views {
		if v.healthy(g) {
			n++
		}
	}
	return n
}

// quorumState is a family's part of the fleet's views, in agreedGroup.
type quorumState struct {
	views   map[string]fleetView // the other servers' live views, by server, as of the last list
	bad     map[string]string    // the view keys that do not parse, and the value logged
	live    int                  // how many counted at the last decision, this server's included
	put     string               // this server's view as last written; "" to write it again
	putRev  int64                // the revision of that write
	putting bool                 // a write of it is out
	why     string               // the cause of the move proposed last, for its log line
	// clashLogged says that another server was seen writing this server's view key.
	clashLogged bool
	vote        offVote
	holdFrom    time.Time // when a group to return to appeared, with none agreed
	// disagrees is the agreed group while this server sees it with no healthy backend and the
	// fleet's quorum keeps it: this server answers its own choice, and says so. 0 for none.
	disagrees    uint8
	disagreeFrom time.Time // when this server began to see the agreed group down, unheeded
	exported     bool      // the disagreement gauge was set
}

// offVote is the agreed group this server saw fail while cut off from etcd.
type offVote struct {
	group uint8
	rev   int64
	until time.Time // zero while still cut off
}

// voteGrace is how long a vote cast while cut off counts after etcd returns: long enough for
// the fleet's other servers, which lost etcd too when it was etcd that went away, to come
// back (they retry every 2 s at most) and publish theirs. A vote no quorum joined then is a
// false alarm of this server's, and lapses.
const voteGrace = 10 * time.Second

func viewKey(fam int) string { return "_view/" + familyName(fam) + "/" }

// hostname names this machine in the fleet's view keys.
var hostname = sync.OnceValue(func() string {
	h, err := os.Hostname()
	if err != nil || h == "" {
		return "unknown"
	}
	return h
})

// viewID names this server among the fleet's: its host, its bind address and its server
// block's address, which a restart keeps, so that a restarted server's view replaces its own
// and is never counted twice. The bind address tells apart servers of one host in network
// namespaces of their own. A "/" would nest the key.
func (p *Pool) viewID() string {
	id := hostname()
	if p.cfg.Bind != "" {
		id += "," + p.cfg.Bind
	}
	return strings.ReplaceAll(id+","+strings.TrimPrefix(p.cfg.Server, "dns://"), "/", "_")
}

// quorumDecides reports whether the fleet's serving group moves on a quorum of views.
func (p *Pool) quorumDecides() bool { return p.agreeing() && !p.cfg.Quorum.Any }

// takeViewsLocked records the other servers' views of family fam from a list. A view that does
// not parse is left out, once logged. Callers hold mu.
func (p *Pool) takeViewsLocked(fam int, state map[string]source.KeyValue) {
	q := &p.agree.fam[fam].q
	prefix, self := viewKey(fam), p.viewID()
	q.views = map[string]fleetView{}
	bad := map[string]string{}
	ownListed := false
	for k, kv := range state {
		id, ok := strings.CutPrefix(k, prefix)
		if !ok {
			continue
		}
		if id == self {
			// A list older than the last write may show the value before it.
			ownListed = kv.Value == q.put || kv.ModRevision < q.putRev
			// Not this server's writing: another server has its name, and the two views
			// count as one, each overwriting the other.
			if !ownListed && q.put != "" && !q.putting && !q.clashLogged {
				q.clashLogged = true
				log.Errorf("zone %s: etcd key %s%s holds %s, which this server did not write: another server of the fleet has the same host name, bind address and server address, and the quorum counts the two as one; give them distinct host names or bind addresses",
					p.cfg.Zone, p.cfg.Source.Etcd.Prefix, k, kv.Value)
			}
			continue
		}
		var v fleetView
		if err := json.Unmarshal([]byte(kv.Value), &v); err != nil {
			if q.bad[k] != kv.Value {
				log.Warningf("zone %s: etcd key %s%s is not a server's view (%v); leaving it out of the quorum", p.cfg.Zone, p.cfg.Source.Etcd.Prefix, k, err)
			}
			bad[k] = kv.Value
			continue
		}
		q.views[id] = v
	}
	q.bad = bad
	// The lease expired (etcd was away longer than LeaseTTL), or someone wrote over it.
	if !ownListed && !q.putting {
		q.put = ""
	}
}

// followQuorumLocked decides family fam's serving group with the fleet: it publishes this
// server's view, and moves the agreed group by compare-and-swap only when a quorum of the live
// views sees it down; meanwhile it adopts the agreed group while that has a healthy backend
// here. Called from followAgreementLocked, connected, with no proposal out. Callers hold mu.
func (p *Pool) followQuorumLocked(fam int, fo *balance.Failover, now time.Time) {
	a := &p.agree.fam[fam]
	q := &a.q
	a.retry = time.Time{} // set again below if a wait goes on
	if q.vote.group != 0 {
		switch {
		case q.vote.rev != a.rev:
			q.vote = offVote{} // the key moved since: the vote is spent
		case q.vote.until.IsZero():
			q.vote.until = now.Add(voteGrace)
		case !now.Before(q.vote.until):
			log.Infof("zone %s: %s: no quorum of the fleet saw priority group %d down while etcd was away; following the fleet",
				p.cfg.Zone, familyName(fam), q.vote.group)
			q.vote = offVote{}
		}
	}
	if !q.exported { // the gauge is there from the start, at 0, for a dashboard to show
		q.exported = true
		p.metrics.FleetDisagreement.WithLabelValues(p.cfg.Server, p.cfg.Zone, familyName(fam)).Set(float64(min(q.disagrees, 1)))
	}
	healthy := fo.Healthy()
	serving, _ := fo.Serving()
	own := fleetView{Healthy: healthy.List(), Off: q.vote.group, OffRevision: q.vote.rev, Serving: serving}
	p.publishViewLocked(fam, own)
	if a.own == failedBack { // an operator's act: no quorum to wait for
		if a.known && a.group == serving {
			a.own = agreedByFleet
			return
		}
		q.why = "" // the fail-back's own lines say who
		p.proposeLocked(fam, serving, a.ownRev, failedBack, now)
		return
	}
	views := append(make([]fleetView, 0, len(q.views)+1), own)
	for _, v := range q.views {
		views = append(views, v)
	}
	q.live = len(views)
	need := p.cfg.Quorum.of(len(views))
	agreed := a.group // 0 when nothing is agreed, or the fleet was all down
	stay, target := quorumDecision(views, agreed, a.rev, need)
	if stay {
		q.holdFrom = time.Time{}
		if q.vote.group == agreed && q.vote.group != 0 {
			// Until the vote lapses, this server keeps the switch it made while cut off. The
			// timer wakes the pool when it does: with probes steady, nothing else would, and
			// the server would answer its own group beside the fleet's for good.
			a.retry = q.vote.until
			return
		}
		a.own = agreedByFleet
		sw := fo.Adopt(agreed, fmt.Sprintf("agreed by the fleet (etcd %s%s, revision %d)", p.cfg.Source.Etcd.Prefix, agreementKey(fam), a.rev))
		if sw.Changed() {
			p.switched(fam, sw)
			serving = sw.To
		}
		p.disagreeLocked(fam, agreed, !healthy.Has(agreed), serving, need, now)
		return
	}
	p.disagreeLocked(fam, agreed, false, serving, need, now)
	a.own = agreedByFleet // whatever this server decided alone, the quorum decides now
	switch {
	case target == 0 && (!a.known || agreed == 0):
		q.holdFrom = time.Time{}
		return // nothing to move to, and nothing agreed to move off
	case !a.known:
		// Nothing agreed yet (a fleet's first start, or an etcd that lost its data): under
		// nopreempt a first choice is kept too, so the group that a quorum of the servers
		// serves, if there is one; else the highest a quorum sees healthy. Each server
		// proposes the same, and the first compare-and-swap (on an absent key) wins.
		if g := servedByQuorum(views, need); g != 0 {
			target = g
		}
		// Servers starting together publish their views one after another: the hold lets
		// them all in, so that one server's false alarm at the start is outvoted too.
		if !p.holdLocked(fam, now) {
			return
		}
	case target == 0:
		// A quorum sees the agreed group down and none healthy: the fleet is all down. The
		// key says so ("0"), so that the return goes to the highest group, not back to
		// whichever was agreed last.
	case agreed == 0:
		// The return after the fleet was all down: groups recovering together
		// reach the views at their probes' pace, one server after another. Wait until every
		// server has probed them all, so that the move goes once, to the highest. Meanwhile
		// there is no fleet's choice for nopreempt to keep: the highest group healthy here
		// serves, rather than whichever came back first.
		if top, ok := healthy.Highest(); ok && top != serving {
			if sw := fo.Adopt(top, "the fleet has no group yet: the highest healthy here, until it agrees"); sw.Changed() {
				p.switched(fam, sw)
			}
		}
		if !p.holdLocked(fam, now) {
			return
		}
	}
	if a.known && a.group == target {
		return
	}
	if gap := max(time.Second, p.cfg.Spec.Interval); now.Sub(a.proposed) < gap {
		a.retry = a.proposed.Add(gap)
		return
	}
	q.holdFrom = time.Time{}
	q.why = quorumCause(views, agreed, a.rev, target, need, p.cfg.Quorum, a.known)
	p.proposeLocked(fam, target, a.rev, agreedByFleet, now)
}

// quorumCause says, for the log line of a move that wins, which views made it.
func quorumCause(views []fleetView, agreed uint8, rev int64, target uint8, need int, q Quorum, known bool) string {
	switch {
	case !known:
		return fmt.Sprintf("nothing agreed yet; %d of %d live views see it healthy (fleet_quorum %s)", seenHealthy(views, target), len(views), q)
	case agreed == 0:
		return fmt.Sprintf("the return after every group was down; %d of %d live views see it healthy (fleet_quorum %s)", seenHealthy(views, target), len(views), q)
	}
	down := 0
	for _, v := range views {
		if v.seesDown(agreed, rev) {
			down++
		}
	}
	if target == 0 {
		return fmt.Sprintf("%d of %d live views see group %d down and none healthy, %d needed (fleet_quorum %s)", down, len(views), agreed, need, q)
	}
	return fmt.Sprintf("%d of %d live views see group %d down, %d needed (fleet_quorum %s)", down, len(views), agreed, need, q)
}

// holdLocked reports whether the family's proposal, with nothing agreed, has waited returnHold
// since a group to propose appeared; if not, the pool's timer wakes it then. Callers hold mu.
func (p *Pool) holdLocked(fam int, now time.Time) bool {
	a := &p.agree.fam[fam]
	if a.q.holdFrom.IsZero() {
		a.q.holdFrom = now
	}
	if until := a.q.holdFrom.Add(p.returnHold()); now.Before(until) {
		a.retry = until // armLocked wakes the pool then
		return false
	}
	return true
}

// returnHold is how long the fleet waits, with no group agreed, for the views of groups that
// recover together: every server probes each backend within rise intervals and a timeout, and
// writes its view at once.
func (p *Pool) returnHold() time.Duration {
	s := p.cfg.Spec
	return time.Duration(max(s.Rise, 1))*s.Interval + s.Timeout + time.Second
}

// publishViewLocked writes this server's view of family fam under its own leased key, when it
// changed since the last write. Callers hold mu.
func (p *Pool) publishViewLocked(fam int, v fleetView) {
	q := &p.agree.fam[fam].q
	data, _ := json.Marshal(v) // of integers: cannot fail
	want := string(data)
	if q.putting || want == q.put {
		return
	}
	q.putting = true
	e, ctx := p.agree.Etcd, p.agree.ctx
	key := viewKey(fam) + p.viewID()
	p.agreeWG.Add(1)
	go func() {
		defer p.agreeWG.Done()
		wctx, cancel := context.WithTimeout(ctx, fleetWriteTimeout)
		defer cancel()
		rev, err := e.PutLeased(wctx, key, want)
		p.mu.Lock()
		q := &p.agree.fam[fam].q
		q.putting = false
		if err == nil {
			q.put, q.putRev = want, rev
		} else if ctx.Err() == nil {
			// The next rebuild (a probe result, a list, etcd back) writes it again.
			log.Warningf("zone %s: %s: could not publish this server's view of the priority groups: %v; the fleet decides without it until it can",
				p.cfg.Zone, familyName(fam), err)
		}
		p.mu.Unlock()
	}()
}

// disagreeLocked records whether this server sees the fleet's agreed group with no healthy
// backend while a quorum keeps it, and logs the start and the end of it. Only a disagreement
// that lasts returnHold is one: a failure seen by every server reaches their views one after
// another, and the first to see it is not in disagreement with the fleet for that moment.
// Callers hold mu.
func (p *Pool) disagreeLocked(fam int, agreed uint8, disagrees bool, serving uint8, need int, now time.Time) {
	a := &p.agree.fam[fam]
	q := &a.q
	was := q.disagrees
	switch {
	case !disagrees:
		agreed, q.disagreeFrom = 0, time.Time{}
	case was == agreed:
	case q.disagreeFrom.IsZero():
		q.disagreeFrom = now
		fallthrough
	default:
		if until := q.disagreeFrom.Add(p.returnHold()); now.Before(until) {
			if a.retry.IsZero() || until.Before(a.retry) {
				a.retry = until // armLocked wakes the pool then
			}
			return
		}
	}
	if was == agreed {
		return
	}
	q.disagrees = agreed
	p.metrics.FleetDisagreement.WithLabelValues(p.cfg.Server, p.cfg.Zone, familyName(fam)).Set(float64(min(agreed, 1)))
	if disagrees {
		log.Warningf("zone %s: %s: the fleet serves priority group %d, which this server sees with no healthy backend, but fewer than %d of the fleet's %d live views (fleet_quorum %s) see it down: answering from group %s meanwhile",
			p.cfg.Zone, familyName(fam), agreed, need, q.live, p.cfg.Quorum, groupName(serving))
		return
	}
	log.Infof("zone %s: %s: this server agrees with the fleet again (priority group %s)", p.cfg.Zone, familyName(fam), groupName(serving))
}
