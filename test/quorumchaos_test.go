package test

import (
	"context"
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/healthdns/healthdns/test/harness"
)

// fleetChange is one change of a key under a fleet's prefix, as an etcd watch saw it.
type fleetChange struct {
	at      time.Time // when the watch delivered it
	rev     int64
	key     string
	value   string
	deleted bool
}

// fleetTimeline records every change of the keys under prefix from now on, for a checker to
// replay at the end.
type fleetTimeline struct {
	mu      sync.Mutex
	changes []fleetChange
	err     error
}

func watchFleet(t *testing.T, c *clientv3.Client, prefix string) *fleetTimeline {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r, err := c.Get(ctx, prefix, clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		cancel()
		t.Fatalf("get %s: %v", prefix, err)
	}
	tl := &fleetTimeline{}
	watch := c.Watch(ctx, prefix, clientv3.WithPrefix(), clientv3.WithRev(r.Header.Revision+1))
	done := make(chan struct{})
	go func() {
		defer close(done)
		for resp := range watch {
			tl.mu.Lock()
			if err := resp.Err(); err != nil && tl.err == nil {
				tl.err = err
			}
			for _, ev := range resp.Events {
				tl.changes = append(tl.changes, fleetChange{at: time.Now(), rev: ev.Kv.ModRevision, key: string(ev.Kv.Key),
					value: string(ev.Kv.Value), deleted: ev.Type == clientv3.EventTypeDelete})
			}
			tl.mu.Unlock()
		}
	}()
	t.Cleanup(func() { cancel(); <-done })
	return tl
}

// snapshot is the changes seen so far.
func (tl *fleetTimeline) snapshot() ([]fleetChange, error) {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	return slices.Clone(tl.changes), tl.err
}

// chaosView is the part of a server's view (pool/quorum.go's fleetView) the checker reads.
type chaosView struct {
	Healthy     []uint8 `json:"healthy"`
	Off         uint8   `json:"off"`
	OffRevision int64   `json:"off_revision"`
}

func (v chaosView) seesDown(g uint8, rev int64) bool {
	return !slices.Contains(v.Healthy, g) || (v.Off == g && v.OffRevision == rev)
}

// quorumSlack is how far, either side of a move, the checker looks for the views that made it:
// the writer's own view goes to etcd beside its compare-and-swap, not before it, and the
// others' reach it by its last list, which may be a moment old.
const quorumSlack = 3 * time.Second

// checkMoves replays a timeline of a zone's family under prefix (the ipv4 views and agreement
// key) and returns what breaks the quorum's rules: a move off a group without a majority of
// the live views seeing it down about then, a move up that the test did not write (nopreempt),
// and a move that no server logged with its cause. byTest holds the revisions the test wrote
// itself (the operator's fail-back). logs is every output of every server process.
func checkMoves(changes []fleetChange, prefix string, byTest map[int64]bool, logs []string) (moves int, problems []string) {
	groupKey, viewPrefix := prefix+"_group/ipv4", prefix+"_view/ipv4/"
	views := map[string]string{}
	group, groupRev := "", int64(0)
	moved := map[string]int{} // "TO was FROM", by the servers
	for i, ch := range changes {
		switch {
		case strings.HasPrefix(ch.key, viewPrefix):
			if ch.deleted {
				delete(views, ch.key)
			} else {
				views[ch.key] = ch.value
			}
			continue
		case ch.key != groupKey:
			continue
		}
		from, to := group, ch.value
		if ch.deleted {
			to = ""
		}
		fromRev := groupRev
		group, groupRev = to, ch.rev
		if byTest[ch.rev] || from == to {
			continue
		}
		moves++
		moved[groupWord(to)+" was "+groupWord(from)]++
		f, err := strconv.Atoi(from)
		if from == "" || from == "0" || err != nil {
			continue // a first choice, or the return after every group was down
		}
		if t, _ := strconv.Atoi(to); t > f {
			problems = append(problems, fmt.Sprintf("revision %d: the key moved up from %s to %s, which only the operator's fail-back may (nopreempt)", ch.rev, from, to))
		}
		// The live views about then, and those that saw the group down.
		live, down := map[string]bool{}, map[string]bool{}
		for k, v := range views {
			live[k] = true
			if viewDown(v, uint8(f), fromRev) {
				down[k] = true
			}
		}
		for _, o := range changes {
			if !strings.HasPrefix(o.key, viewPrefix) || o.deleted || o.at.Before(ch.at.Add(-quorumSlack)) || o.at.After(ch.at.Add(quorumSlack)) {
				continue
			}
			if o.rev > ch.rev {
				live[o.key] = true
			}
			if live[o.key] && viewDown(o.value, uint8(f), fromRev) {
				down[o.key] = true
			}
		}
		if need := len(live)/2 + 1; len(down) < need {
			problems = append(problems, fmt.Sprintf("revision %d (change %d): the key moved from %s to %s with %d of %d live views seeing %s down about then, %d needed: %v",
				ch.rev, i, from, to, len(down), len(live), from, need, views))
		}
	}
	logged := map[string]int{}
	line := regexp.MustCompile(`priority group (\S+) agreed for the fleet \(etcd ` + regexp.QuoteMeta(groupKey) + `, was (\S+)\): .*live views`)
	for _, out := range logs {
		for _, m := range line.FindAllStringSubmatch(out, -1) {
			logged[m[1]+" was "+m[2]]++
		}
	}
	for move, n := range moved {
		if logged[move] != n {
			problems = append(problems, fmt.Sprintf("%d moves to %s in etcd, %d logged with their cause", n, move, logged[move]))
		}
	}
	return moves, problems
}

func viewDown(value string, g uint8, rev int64) bool {
	var v chaosView
	return json.Unmarshal([]byte(value), &v) == nil && v.seesDown(g, rev)
}

// groupWord is a key's value as the servers' log lines name it.
func groupWord(v string) string {
	if v == "" || v == "0" {
		return "none"
	}
	return v
}

// chaosServer is one server of TestFleetQuorumChaos and the links the test cuts.
type chaosServer struct {
	s        *harness.Server
	conf     string
	primary  *harness.Backend // on the server's own check port: stopped, this server alone loses the primary
	etcd     *harness.Proxy   // this server's way to etcd
	cut      bool             // from the primary
	etcdCut  bool
	restarts int
}

// TestFleetQuorumChaos: a randomized schedule over three servers under nopreempt and the
// default quorum mixes cuts between a server and the primary, a server cut off from etcd (a
// proxy of its own in front of etcd, cut and mended), a server killed and restarted, the
// primary down for everyone, and the operator's fail-back. A checker replays the etcd watch of
// the agreement key and the views at the end: no move off a group without a quorum of the live
// views seeing it down about then, no move up but the test's fail-back, every move logged with
// its cause by the server that wrote it. After each step, within a generous bound, every live
// server that reaches etcd answers the agreed group where it sees it healthy (and the standby
// where it does not), and a majority of the live views seeing the primary down moves the key.
// The bench's long run is bench/quorum/run.sh.
func TestFleetQuorumChaos(t *testing.T) {
	harness.RequireEtcd(t)
	t.Parallel()
	const primary, standby = "127.0.19.1", "127.0.19.2"
	const zone, prefix = "chaos.lan.", "/healthdns/chaos.lan/"
	const groupKey = prefix + "_group/ipv4"
	steps, rng := randomSchedule(t, 8)
	etcd := harness.StartEtcd(t)
	kv := etcd.Client(t)
	put(t, kv, prefix+primary, "priority 200")
	put(t, kv, prefix+standby, "priority 100")
	timeline := watchFleet(t, kv, prefix+"_")
	fleet := make([]*chaosServer, 3)
	for i := range fleet {
		port := harness.FreePort(t, primary, standby)
		c := &chaosServer{primary: harness.StartBackend(t, primary, port), etcd: harness.StartProxy(t, strings.TrimPrefix(etcd.Endpoint(), "http://"))}
		harness.StartBackend(t, standby, port)
		c.conf = ".:{{PORT}} {\n bind 127.0.0.1\n" + etcdPool("chaos.lan", "http://"+c.etcd.Addr, port, "nopreempt") + "}\n"
		fleet[i] = c
	}
	for _, c := range fleet { // started together, as a fleet is
		c.s = harness.Start(t, c.conf)
	}
	var oldLogs []string
	byTest := map[int64]bool{}
	primaryDead := false
	start := time.Now()

	// settled waits until every server that reaches etcd answers as the agreed key says, and
	// the key has moved off the primary when a majority of the live views sees it down.
	settled := func(what string) {
		t.Helper()
		var key string
		var answers []string
		ok := harness.Poll(30*time.Second, 100*time.Millisecond, func() bool {
			key = get(t, kv, groupKey)
			answers = make([]string, len(fleet))
			live, down := 0, 0
			good := true
			for i, c := range fleet {
				sees := !c.cut && !primaryDead
				got := c.s.Addrs(t, "udp", zone, dns.TypeA)
				answers[i] = strings.Join(got, ",")
				if c.etcdCut {
					continue
				}
				live++
				if !sees {
					down++
				}
				want := standby
				if key == "200" && sees {
					want = primary
				}
				good = good && harness.SameSet(got, want)
			}
			mustMove := live > 0 && down >= live/2+1
			return good && key != "" && !(mustMove && key == "200")
		})
		state := fmt.Sprintf("+%s %s: key %s; answers %v", time.Since(start).Round(100*time.Millisecond), what, key, answers)
		for i, c := range fleet {
			state += fmt.Sprintf("; s%d primary-cut=%v etcd-cut=%v restarts=%d", i+1, c.cut, c.etcdCut, c.restarts)
		}
		if !ok {
			t.Fatalf("within 30s the fleet did not settle as the agreed key says: %s, primary dead for all %v", state, primaryDead)
		}
		t.Log(state)
	}
	settled("the start")
	// linked cuts or mends the server's links as the test's state says.
	linked := func() {
		for _, c := range fleet {
			if c.cut || primaryDead {
				c.primary.Stop()
			} else {
				c.primary.Start()
			}
			if c.etcdCut {
				c.etcd.Cut()
			} else {
				c.etcd.Mend()
			}
		}
	}

	// The schedule opens with the case it found first: a server that lost the primary while
	// cut off from etcd, and found both again, keeps its vote against the primary a while
	// (voteGrace), then follows the fleet back to it. It used to keep answering the standby
	// beside the fleet's primary until something else woke its pool.
	s1 := fleet[0]
	s1.etcdCut = true
	linked()
	harness.Eventually(t, 15*time.Second, func() bool { return strings.Contains(s1.s.Output(), "cut off from etcd") }, "server 1 to see etcd gone")
	s1.cut = true
	linked()
	harness.Eventually(t, 15*time.Second, func() bool { return harness.SameSet(s1.s.Addrs(t, "udp", zone, dns.TypeA), standby) }, "server 1, cut off, to answer the standby")
	s1.etcdCut = false
	linked()
	harness.Eventually(t, 15*time.Second, func() bool { return strings.Count(s1.s.Output(), "backends_etcd: connected to") >= 2 }, "server 1 to reach etcd again")
	s1.cut = false
	linked()
	settled("the opening: server 1 lost the primary while cut off from etcd, and found both again")

	for step := 1; step <= steps; step++ {
		i := rng.IntN(len(fleet))
		c := fleet[i]
		var what string
		switch a := rng.IntN(9); {
		case a < 3:
			c.cut = !c.cut
			if c.cut {
				what = fmt.Sprintf("server %d cut from the primary", i+1)
			} else {
				what = fmt.Sprintf("server %d reaches the primary again", i+1)
			}
		case a < 5:
			c.etcdCut = !c.etcdCut
			if c.etcdCut {
				what = fmt.Sprintf("server %d cut from etcd", i+1)
			} else {
				what = fmt.Sprintf("server %d reaches etcd again", i+1)
			}
		case a < 6:
			c.etcdCut = false
			c.etcd.Mend()
			oldLogs = append(oldLogs, c.s.Restart(t, syscall.SIGKILL, "", nil))
			c.restarts++
			what = fmt.Sprintf("server %d killed and restarted", i+1)
		case a < 7:
			primaryDead = !primaryDead
			what = map[bool]string{true: "the primary down for everyone", false: "the primary back"}[primaryDead]
		default:
			if get(t, kv, groupKey) != "100" {
				step--
				continue
			}
			for _, c := range fleet {
				c.cut, c.etcdCut = false, false
			}
			primaryDead = false
			linked()
			settled(fmt.Sprintf("step %d: every link mended before the fail-back", step))
			// An operator fails back once the primary is seen healthy again: by every view.
			harness.Eventually(t, 30*time.Second, func() bool {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				r, err := kv.Get(ctx, prefix+"_view/ipv4/", clientv3.WithPrefix())
				if err != nil || len(r.Kvs) != len(fleet) {
					return false
				}
				for _, v := range r.Kvs {
					var view chaosView
					if json.Unmarshal(v.Value, &view) != nil || !slices.Contains(view.Healthy, 200) {
						return false
					}
				}
				return true
			}, "step ", step, ": every server's view to see the primary healthy before the fail-back")
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			r, err := kv.Put(ctx, groupKey, "200")
			cancel()
			if err != nil {
				t.Fatalf("the fail-back: put %s: %v", groupKey, err)
			}
			byTest[r.Header.Revision] = true
			what = "the operator's fail-back"
		}
		linked()
		// A while for the step to play out before it is checked: long enough, now and then,
		// for a cut server's lease to expire.
		time.Sleep(time.Duration(500+rng.IntN(6000)) * time.Millisecond)
		settled(fmt.Sprintf("step %d: %s", step, what))
	}

	for _, c := range fleet { // the last views and moves in: nothing cut
		c.etcd.Mend()
	}
	time.Sleep(quorumSlack)
	changes, err := timeline.snapshot()
	if err != nil {
		t.Errorf("the watch of %s: %v", prefix, err)
	}
	logs := append([]string(nil), oldLogs...)
	for _, c := range fleet {
		logs = append(logs, c.s.Output())
	}
	moves, problems := checkMoves(changes, prefix, byTest, logs)
	for _, p := range problems {
		t.Error(p)
	}
	t.Logf("%d steps, %d moves by the servers, %d fail-backs, %d changes watched, %s", steps, moves, len(byTest), len(changes), time.Since(start).Round(time.Second))
}
