package balance

import "math/rand/v2"

// Weighted draws backends in proportion to their weights from the set's alias table, O(1) a draw.
// Several answers are drawn without repeats: duplicates are redrawn a bounded number of times,
// then the set is filled in order, so an answer always carries min(n, size) distinct addresses.
type Weighted struct{}

// Pick implements Policy.
func (Weighted) Pick(s *Set, n int) Picks {
	size := s.Len()
	if size == 0 {
		return Picks{}
	}
	n = min(n, size, MaxAnswers)
	var p Picks
	for tries := 0; p.N < n && tries < 4*n; tries++ {
		r := rand.Uint64()
		i := s.weightedIndex(uint32(uint64(size)*(r>>32)>>32), uint32(r))
		if !p.has(i) {
			p.Idx[p.N] = uint16(i)
			p.N++
		}
	}
	for i := 0; p.N < n; i++ {
		if !p.has(i) {
			p.Idx[p.N] = uint16(i)
			p.N++
		}
	}
	return p
}

func (p *Picks) has(i int) bool {
	for _, j := range p.Idx[:p.N] {
		if int(j) == i {
			return true
		}
	}
	return false
}
