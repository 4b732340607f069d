package balance

import (
	"encoding/binary"
	"net/netip"
	"slices"
	"testing"
	"time"
)

// fuzzSet reads a set from fuzzed bytes, six bytes an address: four of an IPv4 address and two
// of its weight (0..1023, so that a zero weight, which counts as 1, and weights past setup's
// 1000 come up). Repeated addresses are dropped: a pool's set never holds one twice. A set
// stops at fuzzSetMax addresses: each costs a hash table 8,192 scores, and sets past
// MaxAnswers and hashRanks take no path that smaller ones do not.
func fuzzSet(data []byte) *Set {
	var addrs []netip.Addr
	var weights []uint32
	for ; len(data) >= 6 && len(addrs) < fuzzSetMax; data = data[6:] {
		a := netip.AddrFrom4([4]byte(data[:4]))
		if slices.Contains(addrs, a) {
			continue
		}
		addrs = append(addrs, a)
		weights = append(weights, uint32(binary.BigEndian.Uint16(data[4:])%1024))
	}
	return NewSet(addrs, weights)
}

const fuzzSetMax = MaxAnswers + 2

// FuzzPolicies: on any set, weights and answer count, every policy picks as many distinct
// addresses of the set as the answer holds; the hash table answers the same key the same way,
// and a key keeps its first backend when another backend leaves the set (rendezvous hashing's
// promise, which is what makes consistent_hash sticky across a backend's death).
func FuzzPolicies(f *testing.F) {
	f.Add([]byte{10, 0, 0, 1, 0, 1, 10, 0, 0, 2, 0, 1, 10, 0, 0, 3, 0, 9}, 2, []byte("client"), uint16(1))
	f.Add([]byte{10, 0, 0, 1, 0, 0}, 3, []byte{}, uint16(0))
	f.Add([]byte{}, 1, []byte("k"), uint16(0))
	f.Add([]byte{10, 0, 0, 1, 3, 232, 10, 0, 0, 1, 0, 5, 192, 168, 1, 1, 0, 1}, 70, []byte("a much longer client key than eight bytes"), uint16(2))
	f.Add([]byte{1, 1, 1, 1, 0, 1, 2, 2, 2, 2, 0, 1}, -1, []byte("x"), uint16(0))
	f.Fuzz(func(t *testing.T, data []byte, n int, key []byte, leave uint16) {
		s := fuzzSet(data)
		want := max(min(n, s.Len(), MaxAnswers), 0)
		for name, p := range map[string]Policy{"random": Random{}, "round_robin": &RoundRobin{}, "weighted": Weighted{}} {
			for range 3 { // round_robin turns; random and weighted draw anew
				t.Logf("%s", name)
				checkPicks(t, p.Pick(s, n), s.Len(), want)
			}
		}
		table := NewHashTable(s)
		first := table.Pick(key, n)
		checkPicks(t, first, s.Len(), want)
		if again := table.Pick(key, n); again != first {
			t.Fatalf("consistent_hash: key %q picked %v, then %v", key, first.Idx[:first.N], again.Idx[:again.N])
		}
		if first.N == 0 || s.Len() < 2 {
			return
		}
		gone := int(leave) % s.Len()
		if gone == int(first.Idx[0]) {
			return
		}
		kept := s.Addrs[first.Idx[0]]
		rest := NewSet(slices.Delete(slices.Clone(s.Addrs), gone, gone+1), slices.Delete(slices.Clone(s.Weights), gone, gone+1))
		after := NewHashTable(rest).Pick(key, 1)
		if got := rest.Addrs[after.Idx[0]]; got != kept {
			t.Fatalf("consistent_hash: key %q moved from %s to %s when %s left", key, kept, got, s.Addrs[gone])
		}
	})
}

// groupsIn reads a set of priorities from fuzzed bytes, skipping 0, which is "no group".
func groupsIn(b []byte) Groups {
	return groupsOf(slices.DeleteFunc(slices.Clone(b), func(p byte) bool { return p == 0 })...)
}

// FuzzFailover drives the priority-group state machine through any sequence of health sets,
// clock steps, fail-backs and adoptions, under each preemption setting, and checks after every
// step what Failover promises: a group serves exactly when some configured group has a healthy
// backend, the serving group is one of them, the first verdict and a fail-back choose the
// highest, immediate preemption always serves the highest, nopreempt keeps a serving group that
// stays healthy, and preempt_delay moves only up from a serving group that stays healthy.
func FuzzFailover(f *testing.F) {
	f.Add([]byte{100, 200}, byte(0), []byte{0, 200, 100, 1, 100, 0, 0, 200, 100})
	f.Add([]byte{100, 200, 50}, byte(1), []byte{0, 50, 1, 200, 0, 0, 3, 0, 100, 1, 2})
	f.Add([]byte{10, 20, 30}, byte(2), []byte{0, 10, 0, 20, 30, 2, 0, 2, 0, 4, 20, 0, 30})
	f.Add([]byte{1, 255}, byte(2), []byte{0, 1, 255, 5, 255, 0, 255, 2, 2, 2, 2, 0, 1})
	f.Fuzz(func(t *testing.T, configured []byte, mode byte, steps []byte) {
		pre := [...]Preemption{{}, {Never: true}, {Delay: 3 * time.Second}}[mode%3]
		groups := groupsIn(configured)
		fo := NewFailover(groups, pre)
		now := time.Date(2026, 12, 4, 0, 0, 0, 0, time.UTC)
		started := false
		// Each step is an opcode byte and its arguments: 0 an Update with the healthy groups
		// that follow up to the next 0, 1 a second passing, 2 a fail-back, 3 an adoption of
		// the next byte's group, 4 new configured groups up to the next 0, then an Update.
		for len(steps) > 0 {
			op := steps[0] % 5
			steps = steps[1:]
			before, _ := fo.Serving()
			wasHealthy := fo.Healthy()
			switch op {
			case 0, 4:
				end := slices.Index(steps, 0)
				if end < 0 {
					end = len(steps)
				}
				set := groupsIn(steps[:end])
				steps = steps[min(end+1, len(steps)):]
				if op == 4 {
					groups = set
					fo.SetGroups(groups)
					wasHealthy = fo.Healthy()
				}
				healthy := set.and(groups)
				if op == 4 && len(steps) > 0 {
					healthy = groupsIn(steps[:1]).and(groups)
					steps = steps[1:]
				}
				first := !started
				fo.Update(healthy, now)
				started = true
				serving, _ := fo.Serving()
				top, any := healthy.Highest()
				switch {
				case !any:
				case first || pre == (Preemption{}):
					if serving != top {
						t.Fatalf("healthy %s, preemption %+v: group %d serves, want the highest, %d", healthy, pre, serving, top)
					}
				case before != 0 && healthy.Has(before) && wasHealthy.Has(before) && pre.Never:
					if serving != before {
						t.Fatalf("nopreempt: group %d took over from %d, which is still healthy (%s)", serving, before, healthy)
					}
				case before != 0 && healthy.Has(before):
					if serving < before {
						t.Fatalf("preempt_delay: group %d took over from %d, which is higher and still healthy (%s)", serving, before, healthy)
					}
				}
			case 1:
				now = now.Add(time.Second)
				if at, ok := fo.NextCheck(); ok && !now.Before(at) {
					fo.Update(fo.Healthy(), now)
				}
			case 2:
				fo.FailBack()
				serving, _ := fo.Serving()
				if top, ok := fo.Healthy().Highest(); ok && serving != top {
					t.Fatalf("fail-back: group %d serves, want the highest healthy, %d", serving, top)
				}
			case 3:
				if len(steps) > 0 {
					fo.Adopt(steps[0], "fuzz")
					steps = steps[1:]
				}
			}
			serving, ok := fo.Serving()
			healthy := fo.Healthy()
			if !started {
				if ok {
					t.Fatalf("group %d serves before the first Update", serving)
				}
				continue
			}
			if healthy != healthy.and(fo.Groups()) {
				t.Fatalf("healthy groups %s outside the configured %s", healthy, fo.Groups())
			}
			if _, any := healthy.Highest(); any != ok || fo.AllDown() == any {
				t.Fatalf("healthy groups %s, but serving %d (%v), all down %v", healthy, serving, ok, fo.AllDown())
			}
			if ok && !healthy.Has(serving) {
				t.Fatalf("group %d serves with no healthy backend; healthy: %s", serving, healthy)
			}
		}
	})
}
