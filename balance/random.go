package balance

import "math/rand/v2"

// Random answers with a uniformly random address first. An answer of several addresses is a
// random rotation of the set (the first address, then the ones after it in order, wrapping), not a
// uniformly random subset: that keeps a pick O(answers) with no allocation and no bookkeeping of
// which addresses were taken, and every address is still first, and in every answer position,
// equally often.
type Random struct{}

// Pick implements Policy.
func (Random) Pick(s *Set, n int) Picks {
	size := s.Len()
	if size == 0 {
		return Picks{}
	}
	// math/rand/v2's top-level functions draw from a per-thread source: no lock, no shared state.
	return rotation(rand.IntN(size), size, n)
}

// rotation returns min(n, size, MaxAnswers) consecutive indexes from start, wrapping around. They
// are distinct because fewer than size of them are taken.
func rotation(start, size, n int) Picks {
	n = max(min(n, size, MaxAnswers), 0)
	p := Picks{N: n}
	i := start
	for k := range n {
		p.Idx[k] = uint16(i)
		if i++; i == size {
			i = 0
		}
	}
	return p
}
