package balance

import (
	"fmt"
	"math"
	"math/rand/v2"
	"net/netip"
	"slices"
	"sync"
	"testing"
)

// clientKeys returns n distinct client keys: the /24 networks 100.x.y.0, as the handler would
// key clients by their /24.
func clientKeys(n int) [][ClientKeyLen]byte {
	keys := make([][ClientKeyLen]byte, n)
	for i := range keys {
		keys[i] = ClientKey(netip.AddrFrom4([4]byte{100, byte(i >> 8), byte(i), 7}), 24)
	}
	return keys
}

// answers returns the addresses each key gets, n of them, from t.
func answers(t *HashTable, keys [][ClientKeyLen]byte, n int) [][]netip.Addr {
	out := make([][]netip.Addr, len(keys))
	for k, key := range keys {
		p := t.Pick(key[:], n)
		for _, i := range p.Idx[:p.N] {
			out[k] = append(out[k], t.Set().Addrs[i])
		}
	}
	return out
}

func without(all []netip.Addr, drop ...int) []netip.Addr {
	var out []netip.Addr
	for i, a := range all {
		if !slices.Contains(drop, i) {
			out = append(out, a)
		}
	}
	return out
}

// shuffled returns a copy of a in another order: a table must not depend on positions in the set.
func shuffled(a []netip.Addr) []netip.Addr {
	out := slices.Clone(a)
	r := rand.New(rand.NewPCG(3, 4))
	r.Shuffle(len(out), func(i, j int) { out[i], out[j] = out[j], out[i] })
	return out
}

// TestHashOnlyTheDeadBackendsKeysMove is the promise of sticky clients: when one of four equal
// backends dies only its keys move, about a quarter of them, and when it returns exactly those
// keys move back.
func TestHashOnlyTheDeadBackendsKeysMove(t *testing.T) {
	const clients = 10_000
	keys := clientKeys(clients)
	all := addrs(4)
	before := answers(NewHashTable(NewSet(all, nil)), keys, 1)
	for dead := range all {
		t.Run(all[dead].String(), func(t *testing.T) {
			during := answers(NewHashTable(NewSet(without(all, dead), nil)), keys, 1)
			moved := 0
			for k := range keys {
				was, is := before[k][0], during[k][0]
				if is == all[dead] {
					t.Fatalf("key %d answered with the dead backend", k)
				}
				if was != is {
					moved++
					if was != all[dead] {
						t.Fatalf("key %d moved from %s, which is alive, to %s", k, was, is)
					}
				}
			}
			// A quarter is 2,500; the bucket and key draws give a standard deviation of about
			// 0.0064, so a correct table stays under 27% by three of them, and over 23% too.
			if share := float64(moved) / clients; share > 0.27 || share < 0.23 {
				t.Fatalf("%.4f of the keys moved, want the dead backend's quarter (0.23..0.27)", share)
			}
			back := answers(NewHashTable(NewSet(shuffled(all), nil)), keys, 1)
			for k := range keys {
				if back[k][0] != before[k][0] {
					t.Fatalf("key %d is on %s after the return, was on %s before the death", k, back[k][0], before[k][0])
				}
			}
		})
	}
}

// TestHashAnswersOfSeveralStayPut checks the same property for answers of several addresses: a
// key whose answer did not hold the dead backend keeps its answer, in order; one that held it
// loses only that address, the others keep their order, and a new one comes last.
func TestHashAnswersOfSeveralStayPut(t *testing.T) {
	const n = 3
	keys := clientKeys(10_000)
	all := addrs(20)
	before := answers(NewHashTable(NewSet(all, benchWeights(len(all)))), keys, n)
	const dead = 7
	rest := without(all, dead)
	restWeights := slices.Delete(benchWeights(len(all)), dead, dead+1)
	during := answers(NewHashTable(NewSet(rest, restWeights)), keys, n)
	hit := 0
	for k := range keys {
		if !slices.Contains(before[k], all[dead]) {
			if !slices.Equal(before[k], during[k]) {
				t.Fatalf("key %d: answer %v became %v, though %s was not in it", k, before[k], during[k], all[dead])
			}
			continue
		}
		hit++
		kept := slices.DeleteFunc(slices.Clone(before[k]), func(a netip.Addr) bool { return a == all[dead] })
		if !slices.Equal(kept, during[k][:n-1]) || slices.Contains(kept, during[k][n-1]) {
			t.Fatalf("key %d: answer %v became %v, want %v then a new backend", k, before[k], during[k], kept)
		}
	}
	if hit == 0 {
		t.Fatal("no answer held the dead backend: the test checks nothing")
	}
}

// TestHashLargePool checks the property where a pool is large: 10 of 1,000 backends die, and a
// new backend joins.
func TestHashLargePool(t *testing.T) {
	if testing.Short() {
		t.Skip("builds three tables of 1,000 backends")
	}
	keys := clientKeys(10_000)
	all := addrs(1001)
	grown, all := all, all[:1000]
	before := answers(NewHashTable(NewSet(all, nil)), keys, 1)

	dead := []int{0, 100, 200, 300, 400, 500, 600, 700, 800, 999}
	during := answers(NewHashTable(NewSet(without(all, dead...), nil)), keys, 1)
	for k := range keys {
		if was := before[k][0]; was != during[k][0] && !slices.ContainsFunc(dead, func(d int) bool { return all[d] == was }) {
			t.Fatalf("key %d moved from %s, which is alive", k, was)
		}
	}

	after := answers(NewHashTable(NewSet(grown, nil)), keys, 1)
	joined := 0
	for k := range keys {
		if before[k][0] != after[k][0] {
			joined++
			if after[k][0] != grown[1000] {
				t.Fatalf("key %d moved from %s to %s, not to the new backend", k, before[k][0], after[k][0])
			}
		}
	}
	// The new backend's share is 1/1001, about 10 keys.
	if joined == 0 || joined > 40 {
		t.Fatalf("%d keys moved to the new backend, want about 10", joined)
	}
}

// TestHashWeights checks that a backend's share of clients is its weight's share.
func TestHashWeights(t *testing.T) {
	const clients = 10_000
	keys := clientKeys(clients)
	for _, weights := range [][]uint32{{9, 1}, {1, 9}, {3, 1, 2, 7}, {1, 1, 1, 1}} {
		t.Run(fmt.Sprint(weights), func(t *testing.T) {
			var total float64
			for _, w := range weights {
				total += float64(w)
			}
			s := NewSet(addrs(len(weights)), weights)
			got := answers(NewHashTable(s), keys, 1)
			for i, a := range s.Addrs {
				count := 0
				for k := range keys {
					if got[k][0] == a {
						count++
					}
				}
				// ± 2%: over three standard deviations of the bucket and key draws for 9:1.
				share, want := float64(count)/clients, float64(weights[i])/total
				if share < want-0.02 || share > want+0.02 {
					t.Errorf("weight %d of %v serves %.4f of the clients, want %.2f ± 0.02", weights[i], weights, share, want)
				}
			}
		})
	}
	t.Run("the second answer is weighted too", func(t *testing.T) {
		s := NewSet(addrs(4), []uint32{100, 100, 1, 1})
		got := answers(NewHashTable(s), keys, 2)
		both := 0
		for k := range keys {
			if !slices.Contains(got[k], s.Addrs[2]) && !slices.Contains(got[k], s.Addrs[3]) {
				both++
			}
		}
		// Sampling without replacement gives both heavy backends about 0.97 of the time.
		if share := float64(both) / clients; share < 0.95 {
			t.Fatalf("both heavy backends answer %.3f of the clients, want ≥ 0.95", share)
		}
	})
}

// TestHashStable checks that a client's backend depends only on the set's addresses and
// weights: not on the order of the set, nor on the table being rebuilt, nor on the process (the
// hashes are fixed, so replicas and restarts agree; the pinned answers fail if they change).
func TestHashStable(t *testing.T) {
	keys := clientKeys(10_000)
	all := addrs(10)
	first := answers(NewHashTable(NewSet(all, benchWeights(10))), keys, 3)
	again := answers(NewHashTable(NewSet(slices.Clone(all), benchWeights(10))), keys, 3)
	reversed := slices.Clone(all)
	slices.Reverse(reversed)
	rweights := benchWeights(10)
	slices.Reverse(rweights)
	other := answers(NewHashTable(NewSet(reversed, rweights)), keys, 3)
	for k := range keys {
		if !slices.Equal(first[k], again[k]) || !slices.Equal(first[k], other[k]) {
			t.Fatalf("key %d: %v, rebuilt %v, reversed %v", k, first[k], again[k], other[k])
		}
	}

	pinned := map[string]string{
		"192.0.2.1/24":    "[10.0.0.2 10.0.0.0 10.0.0.1 10.0.0.3]",
		"198.51.100.9/24": "[10.0.0.0 10.0.0.2 10.0.0.3 10.0.0.1]",
		"203.0.113.77/32": "[10.0.0.2 10.0.0.1 10.0.0.3 10.0.0.0]",
		"2001:db8::1/56":  "[10.0.0.3 10.0.0.1 10.0.0.2 10.0.0.0]",
	}
	table := NewHashTable(NewSet(addrs(4), nil))
	for client, want := range pinned {
		p := netip.MustParsePrefix(client)
		key := ClientKey(p.Addr(), p.Bits())
		if got := fmt.Sprint(answers(table, [][ClientKeyLen]byte{key}, 4)[0]); got != want {
			t.Errorf("client %s gets %s, got %s before: the hashes changed, and with them every client's backends", client, got, want)
		}
	}
}

// TestHashTableIsRendezvous compares each bucket's row with rendezvous hashing done the slow
// way: every backend scored, all sorted. The build's shortcuts (the kept few, the skipped
// logarithms) must not change a single row.
func TestHashTableIsRendezvous(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	randomWeights := func(n int) []uint32 {
		w := make([]uint32, n)
		for i := range w {
			w[i] = 1 + r.Uint32N(1000)
		}
		return w
	}
	sets := map[string]*Set{
		"3 equal":                  NewSet(addrs(3), nil),
		"9 skewed":                 NewSet(addrs(9), skewed(9)),
		"100 random weights":       NewSet(addrs(100), randomWeights(100)),
		"1000 equal":               NewSet(addrs(1000), nil),
		"1000 random weights":      NewSet(addrs(1000), randomWeights(1000)),
		"20 equal, IPv6, shuffled": NewSet(shuffled(v6addrs(20)), nil),
	}
	for name, s := range sets {
		t.Run(name, func(t *testing.T) {
			table := NewHashTable(s)
			step := 1
			if s.Len() > 100 {
				step = 61 // a sample of the buckets: the slow way is slow
			}
			all := make([]int, s.Len())
			scores := make([]float64, s.Len())
			for b := 0; b < hashBuckets; b += step {
				salt := mix64(uint64(b) + 0x9e3779b97f4a7c15)
				for i, a := range s.Addrs {
					all[i] = i
					scores[i] = -float64(weightOf(s.Weights[i])) / math.Log(uniform(mix64(addrHash(a)^salt)))
				}
				slices.SortFunc(all, func(i, j int) int {
					if s.outranks(scores[i], i, scores[j], j) {
						return -1
					}
					return 1
				})
				row := table.order[b*table.ranks:][:table.ranks]
				for k, i := range row {
					if int(i) != all[k] {
						t.Fatalf("bucket %d, rank %d: backend %d, the slow way says %d", b, k, i, all[k])
					}
				}
			}
		})
	}
}

func v6addrs(n int) []netip.Addr {
	out := make([]netip.Addr, n)
	for i := range out {
		out[i] = netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 15: byte(i)})
	}
	return out
}

func TestHashPickCountAndDistinct(t *testing.T) {
	keys := clientKeys(200)
	for _, size := range []int{0, 1, 3, hashRanks, hashRanks + 1, 100} {
		for _, n := range []int{-1, 0, 1, 3, hashRanks, hashRanks + 1, MaxAnswers, MaxAnswers + 10} {
			t.Run(fmt.Sprintf("size=%d/answers=%d", size, n), func(t *testing.T) {
				table := NewHashTable(NewSet(addrs(size), skewed(size)))
				want := max(min(n, size, MaxAnswers), 0)
				for _, key := range keys {
					checkPicks(t, table.Pick(key[:], n), size, want)
				}
			})
		}
	}
	t.Run("nil", func(t *testing.T) {
		var table *HashTable
		checkPicks(t, table.Pick([]byte("x"), 3), 0, 0)
		checkPicks(t, NewHashTable(nil).Pick([]byte("x"), 3), 0, 0)
		if table.Set() != nil {
			t.Fatal("a nil table has a set")
		}
	})
}

func TestHashPickAllocatesNothing(t *testing.T) {
	table := NewHashTable(NewSet(addrs(100), benchWeights(100)))
	client := netip.MustParseAddr("192.0.2.1")
	for _, n := range []int{1, hashRanks, MaxAnswers} {
		t.Run(fmt.Sprintf("answers=%d", n), func(t *testing.T) {
			if a := testing.AllocsPerRun(1000, func() {
				key := ClientKey(client, 24)
				table.Pick(key[:], n)
			}); a != 0 {
				t.Errorf("%.1f allocations per pick, want 0", a)
			}
		})
	}
}

func TestClientKey(t *testing.T) {
	key := func(s string, bits int) [ClientKeyLen]byte { return ClientKey(netip.MustParseAddr(s), bits) }
	same := []struct{ a, b [ClientKeyLen]byte }{
		{key("192.0.2.1", 24), key("192.0.2.200", 24)},
		{key("2001:db8:0:1::1", 48), key("2001:db8:0:2::2", 48)},
		{key("192.0.2.1", 33), key("192.0.2.1", 32)}, // out of range: the whole address
		{key("192.0.2.1", -1), key("192.0.2.1", 32)},
		{key("fe80::1%eth0", 128), key("fe80::1", 128)},
	}
	for i, tc := range same {
		if tc.a != tc.b {
			t.Errorf("case %d: keys differ: %x and %x", i, tc.a, tc.b)
		}
	}
	differ := []struct{ a, b [ClientKeyLen]byte }{
		{key("192.0.2.1", 24), key("192.0.3.1", 24)},
		{key("192.0.2.0", 24), key("192.0.2.0", 23)}, // same bits, another network size
		{key("192.0.2.1", 32), key("192.0.2.2", 32)},
	}
	for i, tc := range differ {
		if tc.a == tc.b {
			t.Errorf("case %d: different networks share the key %x", i, tc.a)
		}
	}
}

// TestHashConcurrent picks from one table on many goroutines, for the race detector.
func TestHashConcurrent(t *testing.T) {
	table := NewHashTable(NewSet(addrs(50), nil))
	keys := clientKeys(100)
	want := answers(table, keys, 3)
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for range 20 {
				got := answers(table, keys, 3)
				for k := range keys {
					if !slices.Equal(got[k], want[k]) {
						t.Errorf("key %d: %v, then %v", k, want[k], got[k])
						return
					}
				}
			}
		})
	}
	wg.Wait()
}
