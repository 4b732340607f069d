package balance

import "sync/atomic"

// RoundRobin starts each answer one backend further than the last, so consecutive answers cycle
// through the healthy set. The counter is an atomic: no lock on the query path.
type RoundRobin struct {
	next atomic.Uint64
}

// Pick implements Policy.
func (r *RoundRobin) Pick(s *Set, n int) Picks {
	size := s.Len()
	if size == 0 {
		return Picks{}
	}
	return rotation(int((r.next.Add(1)-1)%uint64(size)), size, n)
}
