package balance

import "math/rand/v2"

// Random answers with a uniformly random backend first. With several answers it returns a random
// rotation of the set (the backends after the first, in order), not a uniformly random subset:
// that keeps a pick O(answers) with no allocation, and every backend is still first equally often.
type Random struct{}

// Pick implements Policy.
func (Random) Pick(s *Set, n int) Picks {
	size := s.Len()
	if size == 0 {
		return Picks{}
	}
	return rotation(rand.IntN(size), size, n)
}

// rotation returns min(n, size) consecutive indexes from start, wrapping around.
func rotation(start, size, n int) Picks {
	n = min(n, size, MaxAnswers)
	p := Picks{N: n}
	for i := range n {
		p.Idx[i] = uint16((start + i) % size)
	}
	return p
}
