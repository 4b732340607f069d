package balance

import (
	"math"
	"math/rand/v2"
	"strings"
	"testing"
)

// tableMass returns, for each index, its exact chance of being drawn from s's alias table: a
// column is drawn with chance 1/n, then answers its own index with chance keep/2^32 or its alias.
func tableMass(s *Set) []float64 {
	n := float64(len(s.table))
	mass := make([]float64, len(s.table))
	for i, c := range s.table {
		keep := float64(c.keep) / (1 << 32)
		mass[i] += keep / n
		mass[c.alias] += (1 - keep) / n
	}
	return mass
}

func weightVectors() map[string][]uint32 {
	// Reproducible random vectors: a seeded source in a test is for repeatability, not the query path.
	r := rand.New(rand.NewPCG(1, 2))
	random := func(n int) []uint32 {
		w := make([]uint32, n)
		for i := range w {
			w[i] = 1 + r.Uint32N(1000)
		}
		return w
	}
	return map[string][]uint32{
		"one":             {1},
		"equal":           {1, 1, 1},
		"nine to one":     {9, 1},
		"extreme":         {1000, 1},
		"mixed":           {3, 1, 2, 7},
		"alternating":     {1, 1000, 1, 1000, 1},
		"one heavy":       skewed(1000),
		"random 100":      random(100),
		"random 1000":     random(1000),
		"random max size": random(MaxSetSize),
	}
}

// TestAliasTableExact checks the table itself, with no sampling noise: each index's chance must
// equal its weight share up to the 2^-32 rounding of keep.
func TestAliasTableExact(t *testing.T) {
	for name, weights := range weightVectors() {
		t.Run(name, func(t *testing.T) {
			s := NewSet(addrs(len(weights)), weights)
			if len(s.table) != len(weights) {
				t.Fatalf("table has %d columns for %d weights", len(s.table), len(weights))
			}
			for i, c := range s.table {
				if int(c.alias) >= len(weights) {
					t.Fatalf("column %d aliases %d, out of range", i, c.alias)
				}
			}
			var total float64
			for _, w := range weights {
				total += float64(w)
			}
			for i, m := range tableMass(s) {
				if want := float64(weights[i]) / total; math.Abs(m-want) > 1e-9 {
					t.Fatalf("index %d: chance %.12f, want %.12f", i, m, want)
				}
			}
		})
	}
}

// TestWeightedIndexFollowsWeights samples through the draw itself, so a mistake in how the random
// number is split into column and coin shows up too.
func TestWeightedIndexFollowsWeights(t *testing.T) {
	const draws = 200_000
	for _, weights := range [][]uint32{{1}, {1, 1, 1}, {1000, 1}, {3, 1, 2, 7}} {
		s := NewSet(addrs(len(weights)), weights)
		counts := make([]float64, len(weights))
		for range draws {
			counts[s.weightedIndex(rand.Uint64())]++
		}
		checkShares(t, weights, counts, draws)
	}
}

// checkShares fails when an index's share of draws strays from its weight's share by more than
// seven standard deviations of a binomial share. The worst case in these tests, weight 1 of 1001
// (about 200 hits), falls outside with chance 3.6e-11 (exact binomial tail); the others are near
// the normal 2.6e-12. Together: well under 1e-9.
func checkShares(t *testing.T, weights []uint32, counts []float64, draws float64) {
	t.Helper()
	var total float64
	for _, w := range weights {
		total += float64(w)
	}
	for i, w := range weights {
		want := float64(w) / total
		got := counts[i] / draws
		if tol := 7 * math.Sqrt(want*(1-want)/draws); math.Abs(got-want) > tol {
			t.Errorf("weights %v: index %d drawn %.5f of the time, want %.5f ± %.5f", weights, i, got, want, tol)
		}
	}
}

func TestNewSet(t *testing.T) {
	t.Run("nil weights weigh 1", func(t *testing.T) {
		s := NewSet(addrs(4), nil)
		if len(s.Weights) != 4 {
			t.Fatalf("%d weights for 4 addresses", len(s.Weights))
		}
		for i, w := range s.Weights {
			if w != 1 {
				t.Errorf("weight %d = %d, want 1", i, w)
			}
		}
	})
	t.Run("zero weight counts as 1", func(t *testing.T) {
		zero := tableMass(NewSet(addrs(3), []uint32{0, 1, 2}))
		one := tableMass(NewSet(addrs(3), []uint32{1, 1, 2}))
		for i := range zero {
			if math.Abs(zero[i]-one[i]) > 1e-9 {
				t.Fatalf("weights 0,1,2 give %v, want as 1,1,2: %v", zero, one)
			}
		}
	})
	t.Run("empty", func(t *testing.T) {
		for _, s := range []*Set{nil, NewSet(nil, nil), NewSet(addrs(0), []uint32{})} {
			if s.Len() != 0 {
				t.Fatalf("Len %d, want 0", s.Len())
			}
		}
	})

	panics := []struct {
		name    string
		n       int
		weights []uint32
		want    string
	}{
		{"fewer weights", 3, []uint32{1, 1}, "2 weights for 3 addresses"},
		{"more weights", 1, []uint32{1, 1}, "2 weights for 1 addresses"},
		{"too many addresses", MaxSetSize + 1, nil, "at most"},
	}
	for _, tc := range panics {
		t.Run(tc.name, func(t *testing.T) {
			defer func() {
				r := recover()
				if msg, _ := r.(string); !strings.Contains(msg, tc.want) {
					t.Fatalf("panic %v, want one mentioning %q", r, tc.want)
				}
			}()
			NewSet(addrs(tc.n), tc.weights)
		})
	}
}
