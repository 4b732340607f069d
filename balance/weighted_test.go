package balance

import (
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

// TestWeightedCompletesInOrder forces the redraw bound: one address weighs 1000 and nine weigh 1,
// so redraws almost always repeat the heavy one, and the answer must still fill.
func TestWeightedCompletesInOrder(t *testing.T) {
	const size = 10
	s := NewSet(addrs(size), skewed(size))
	for range 100 {
		checkPicks(t, Weighted{}.Pick(s, size), size, size)
	}
	// Put the heavy address at 7. An answer of 4 is then nearly always 7 (chance 1000/1009), the
	// 15 redraws mostly repeat it, and the completion continues after it: 7, 8, 9, 0. That
	// happens about 0.88 of the time (σ 0.0033 over 10000 picks); a completion starting from
	// the front of the set would give 7, 0, 1, 2 instead.
	weights := make([]uint32, size)
	for i := range weights {
		weights[i] = 1
	}
	weights[7] = 1000
	s = NewSet(addrs(size), weights)
	const draws = 10_000
	inOrder := 0
	for range draws {
		p := Weighted{}.Pick(s, 4)
		if equal(p.Idx[:p.N], []uint16{7, 8, 9, 0}) {
			inOrder++
		}
	}
	if got := float64(inOrder) / draws; got < 0.8 {
		t.Fatalf("answer 7,8,9,0 %.3f of the time, want about 0.88", got)
	}
}
