package balance

import (
	"fmt"
	"math"
	"testing"
)

// TestWeightedNineToOne is the promise in the README: weight 9 beside weight 1 answers first 9
// times in 10.
func TestWeightedNineToOne(t *testing.T) {
	const draws = 100_000
	s := NewSet(addrs(2), []uint32{9, 1})
	var w Weighted
	heavy := 0
	for range draws {
		if w.Pick(s, 1).Idx[0] == 0 {
			heavy++
		}
	}
	// The share's standard deviation is sqrt(0.9*0.1/1e5) = 0.00095; the band is 6.3 of them
	// each side, which a correct draw leaves with chance 2.6e-10 (exact binomial tail). A uniform
	// draw gives 0.5 and always fails.
	if got := float64(heavy) / draws; got < 0.894 || got > 0.906 {
		t.Fatalf("weight 9 of 10 answered first %.4f of the time, want 0.894..0.906", got)
	}
}

func TestWeightedFirstPickFollowsWeights(t *testing.T) {
	const draws = 200_000
	for _, weights := range [][]uint32{{1}, {1, 1, 1}, {1000, 1}, {3, 1, 2, 7}} {
		s := NewSet(addrs(len(weights)), weights)
		counts := make([]float64, len(weights))
		for range draws {
			counts[Weighted{}.Pick(s, 1).Idx[0]]++
		}
		checkShares(t, weights, counts, draws)
	}
}

// TestWeightedSecondAnswerFavoursHeavy checks that later answers are weighted too, not just the
// rest of the set in order.
func TestWeightedSecondAnswerFavoursHeavy(t *testing.T) {
	const draws = 10_000
	s := NewSet(addrs(4), []uint32{100, 100, 1, 1})
	both := 0
	for range draws {
		p := Weighted{}.Pick(s, 2)
		if p.Idx[0] <= 1 && p.Idx[1] <= 1 {
			both++
		}
	}
	// Sampling without replacement gives both heavy addresses about 0.97 of the time (σ 0.0017);
	// an unweighted second answer would give about 0.5, a uniform subset 1/6.
	if got := float64(both) / draws; got < 0.95 {
		t.Fatalf("two answers were the two heavy addresses %.3f of the time, want ≥ 0.95", got)
	}
}

// TestWeightedEveryPositionIsExact compares how often each address lands in each position of an
// answer with the exact chances of weighted sampling without replacement. Skewed weights force
// the walk after the redraws, which once completed an answer with the addresses that followed the
// last one drawn: 1000:1:1 then gave the second position 298 : 2 to the two light addresses
// instead of 150 : 150.
func TestWeightedEveryPositionIsExact(t *testing.T) {
	const draws = 100_000
	tests := []struct {
		weights []uint32
		n       int
	}{
		{[]uint32{9, 1, 1}, 2},
		{[]uint32{1000, 1, 1}, 3},
		{[]uint32{3, 1, 2, 7}, 4},
		{[]uint32{5, 5, 1, 1, 1}, 3},
		{skewed(10), 4},
		{[]uint32{1, 1000, 1, 1000, 1, 1}, 3},
	}
	for _, tc := range tests {
		t.Run(fmt.Sprintf("%v/answers=%d", tc.weights, tc.n), func(t *testing.T) {
			size := len(tc.weights)
			s := NewSet(addrs(size), tc.weights)
			counts := make([][]float64, tc.n)
			for pos := range counts {
				counts[pos] = make([]float64, size)
			}
			for range draws {
				p := Weighted{}.Pick(s, tc.n)
				checkPicks(t, p, size, tc.n)
				for pos, i := range p.Idx[:p.N] {
					counts[pos][i]++
				}
			}
			want := positionChances(tc.weights, tc.n)
			for pos := range counts {
				for i := range size {
					w, got := want[pos][i], counts[pos][i]/draws
					// 7 standard deviations of the binomial share, and a floor for shares near 0.
					if tol := 7*math.Sqrt(w*(1-w)/draws) + 1e-4; math.Abs(got-w) > tol {
						t.Errorf("position %d: index %d drawn %.5f of the time, want %.5f ± %.5f", pos, i, got, w, tol)
					}
				}
			}
		})
	}
}

// positionChances returns, for each of the first n positions, the exact chance of each index
// under successive weighted sampling without replacement, by walking every ordered prefix.
func positionChances(weights []uint32, n int) [][]float64 {
	chances := make([][]float64, n)
	for pos := range chances {
		chances[pos] = make([]float64, len(weights))
	}
	taken := make([]bool, len(weights))
	var walk func(pos int, p float64)
	walk = func(pos int, p float64) {
		if pos == n {
			return
		}
		var left float64
		for i, w := range weights {
			if !taken[i] {
				left += float64(w)
			}
		}
		for i, w := range weights {
			if taken[i] {
				continue
			}
			q := p * float64(w) / left
			chances[pos][i] += q
			taken[i] = true
			walk(pos+1, q)
			taken[i] = false
		}
	}
	walk(0, 1)
	return chances
}
