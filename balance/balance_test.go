package balance

import (
	"math"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"testing"
)

func addrs(n int) []netip.Addr {
	out := make([]netip.Addr, n)
	for i := range out {
		out[i] = netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)})
	}
	return out
}

func policies() map[string]Policy {
	return map[string]Policy{"random": Random{}, "round_robin": &RoundRobin{}, "weighted": Weighted{}}
}

func TestPickCountsAndDistinct(t *testing.T) {
	for name, p := range policies() {
		for _, size := range []int{0, 1, 3, 8, 100} {
			for _, n := range []int{1, 3, 8, 64} {
				s := NewSet(addrs(size), nil)
				for range 50 {
					picks := p.Pick(s, n)
					if want := min(n, size); picks.N != want {
						t.Fatalf("%s size %d n %d: %d picks, want %d", name, size, n, picks.N, want)
					}
					seen := map[uint16]bool{}
					for _, i := range picks.Idx[:picks.N] {
						if int(i) >= size || seen[i] {
							t.Fatalf("%s size %d n %d: bad or repeated index in %v", name, size, n, picks.Idx[:picks.N])
						}
						seen[i] = true
					}
				}
			}
		}
	}
	var nilSet *Set
	for name, p := range policies() {
		if p.Pick(nilSet, 3).N != 0 {
			t.Errorf("%s: picks from a nil set", name)
		}
	}
}

func TestRoundRobinCycles(t *testing.T) {
	s := NewSet(addrs(3), nil)
	rr := &RoundRobin{}
	for i := range 9 {
		if got := rr.Pick(s, 1).Idx[0]; int(got) != i%3 {
			t.Fatalf("pick %d = %d, want %d", i, got, i%3)
		}
	}
	if p := rr.Pick(s, 3); p.Idx[0] != 0 || p.Idx[1] != 1 || p.Idx[2] != 2 {
		t.Fatalf("three answers %v, want the rotation from the next start", p.Idx[:3])
	}
}

func TestRoundRobinConcurrent(t *testing.T) {
	s := NewSet(addrs(4), nil)
	rr := &RoundRobin{}
	counts := make([][4]int, 8)
	var wg sync.WaitGroup
	for g := range counts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 1000 {
				counts[g][rr.Pick(s, 1).Idx[0]]++
			}
		}()
	}
	wg.Wait()
	var total [4]int
	for _, c := range counts {
		for i, n := range c {
			total[i] += n
		}
	}
	// 8000 picks over an atomic counter: exactly 2000 each, whatever the interleaving.
	if total != [4]int{2000, 2000, 2000, 2000} {
		t.Fatalf("concurrent round robin shares %v", total)
	}
}

// share draws n first picks and returns each index's share.
func share(p Policy, s *Set, n int) []float64 {
	counts := make([]float64, s.Len())
	for range n {
		counts[p.Pick(s, 1).Idx[0]]++
	}
	for i := range counts {
		counts[i] /= float64(n)
	}
	return counts
}

func TestWeightedFollowsWeights(t *testing.T) {
	const n = 200000
	for _, weights := range [][]uint32{{1}, {1, 1, 1}, {9, 1}, {1000, 1}, {3, 1, 2, 7}, {5, 5, 1, 1, 1, 1, 1, 1, 1, 1}} {
		s := NewSet(addrs(len(weights)), weights)
		var total float64
		for _, w := range weights {
			total += float64(w)
		}
		got := share(Weighted{}, s, n)
		for i, w := range weights {
			want := float64(w) / total
			// Six standard deviations of a binomial share: a correct table fails with
			// probability below 1e-8; a uniform pick fails every unequal case.
			tol := 6*math.Sqrt(want*(1-want)/n) + 1e-9
			if math.Abs(got[i]-want) > tol {
				t.Errorf("weights %v: index %d got %.4f, want %.4f ± %.4f", weights, i, got[i], want, tol)
			}
		}
	}
}

func TestWeightedSeveralAnswersPreferHeavy(t *testing.T) {
	s := NewSet(addrs(4), []uint32{100, 100, 1, 1})
	heavyPairs := 0
	for range 1000 {
		p := Weighted{}.Pick(s, 2)
		if p.Idx[0] <= 1 && p.Idx[1] <= 1 {
			heavyPairs++
		}
	}
	if heavyPairs < 900 {
		t.Fatalf("two answers were the two heavy backends %d times in 1000", heavyPairs)
	}
}

func TestRandomIsUniform(t *testing.T) {
	const size, n = 5, 100000
	got := share(Random{}, NewSet(addrs(size), nil), n)
	var chi2 float64
	for _, g := range got {
		exp := 1.0 / size
		chi2 += (g - exp) * (g - exp) / exp * n
	}
	// 4 degrees of freedom: P(chi2 > 40) is about 4e-8.
	if chi2 > 40 {
		t.Fatalf("first picks %v, chi2 %.1f", got, chi2)
	}
}

func TestPickAllocatesNothing(t *testing.T) {
	s := NewSet(addrs(100), nil)
	for name, p := range policies() {
		if a := testing.AllocsPerRun(1000, func() { p.Pick(s, 8) }); a != 0 {
			t.Errorf("%s: %.1f allocations per pick", name, a)
		}
	}
}

func TestNew(t *testing.T) {
	for _, name := range []string{"random", "round_robin", "weighted"} {
		if _, err := New(name); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	_, err := New("fastest")
	if err == nil || !strings.Contains(err.Error(), `"fastest"`) || !strings.Contains(err.Error(), "round_robin") {
		t.Errorf("unknown policy error: %v", err)
	}
}

func BenchmarkPick(b *testing.B) {
	for name, p := range policies() {
		for _, n := range []int{1, 3, 8} {
			for _, size := range []int{3, 100, 1000} {
				s := NewSet(addrs(size), nil)
				b.Run(name+"/answers="+itoa(n)+"/pool="+itoa(size), func(b *testing.B) {
					b.ReportAllocs()
					for b.Loop() {
						p.Pick(s, n)
					}
				})
			}
		}
	}
}

func itoa(n int) string { return strconv.Itoa(n) }
