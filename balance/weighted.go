package balance

import "math/rand/v2"

// Weighted draws addresses in proportion to their weights, without repeats: each position of an
// answer is drawn from the addresses not yet taken, with chance weight / (weight left). That is
// successive weighted sampling without replacement, so every position favours the heavy ones and
// none is biased by the order of the set.
//
// A draw first tries the set's alias table (O(1) whatever the set's size), redrawing an address
// already taken; rejecting the taken ones leaves exactly the distribution above. A few heavy
// addresses can make most redraws repeats (weights 1000:1:1 repeat 998 times in 1000), so after a
// bounded number of redraws the position is drawn by one walk over the untaken weights instead:
// the same distribution, computed directly, in O(size).
type Weighted struct{}

// redraws bounds the alias-table tries of one position before it is drawn by a walk.
const redraws = 4

// Pick implements Policy.
func (Weighted) Pick(s *Set, n int) Picks {
	size := s.Len()
	n = min(n, size, MaxAnswers)
	if n <= 0 {
		return Picks{}
	}
	var p Picks
	taken := uint64(0) // the weight of the addresses in p
	for p.N < n {
		i := -1
		for range redraws {
			if j := s.weightedIndex(rand.Uint64()); !p.has(j) {
				i = j
				break
			}
		}
		if i < 0 {
			i = s.walk(&p, rand.Uint64N(s.total-taken))
		}
		p.Idx[p.N] = uint16(i)
		p.N++
		taken += uint64(weightOf(s.Weights[i]))
	}
	return p
}

// walk returns the untaken address at offset r of the untaken weights laid end to end, which is
// each untaken address with chance weight / (weight left) when r is uniform below that sum.
func (s *Set) walk(p *Picks, r uint64) int {
	last := -1
	for i, w := range s.Weights {
		if p.has(i) {
			continue
		}
		last = i
		w := uint64(weightOf(w))
		if r < w {
			return i
		}
		r -= w
	}
	return last // unreachable while r is below the untaken weight; a safe answer all the same
}

// has reports whether index i is already in p. A linear scan of at most MaxAnswers entries beats
// a bitmap sized for the whole set, which would have to be cleared on every pick.
func (p *Picks) has(i int) bool {
	for _, j := range p.Idx[:p.N] {
		if int(j) == i {
			return true
		}
	}
	return false
}
