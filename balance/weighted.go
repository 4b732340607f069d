package balance

import "math/rand/v2"

// Weighted draws addresses in proportion to their weights from the set's alias table, O(1) a draw
// whatever the set's size: weight 9 beside weight 1 is first in 9 answers of 10.
//
// Later addresses of an answer are drawn the same way, redrawing any address already taken. That
// is weighted sampling without replacement, so the second address also favours the heavy ones.
// Redraws are bounded (4 per answer) because a few heavy addresses can make most draws repeats;
// when the bound is hit, the answer is completed with the unused addresses that follow the last
// one drawn, in order, so it always carries min(n, size) distinct addresses.
type Weighted struct{}

// Pick implements Policy.
func (Weighted) Pick(s *Set, n int) Picks {
	size := s.Len()
	n = min(n, size, MaxAnswers)
	if n <= 0 {
		return Picks{}
	}
	var p Picks
	for tries := 4 * n; p.N < n && tries > 0; tries-- {
		if i := s.weightedIndex(rand.Uint64()); !p.has(i) {
			p.Idx[p.N] = uint16(i)
			p.N++
		}
	}
	// The first draw is never a repeat, so there is a last drawn address to continue from. At
	// most p.N used addresses are skipped on the way, so this loop is O(n) too.
	for i := int(p.Idx[p.N-1]); p.N < n; {
		if i++; i == size {
			i = 0
		}
		if !p.has(i) {
			p.Idx[p.N] = uint16(i)
			p.N++
		}
	}
	return p
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
