package balance

import "sync/atomic"

// RoundRobin starts each answer one address further than the last, so consecutive single-address
// answers cycle through the set in order; an answer of several addresses is the rotation from that
// start. The position is one atomic counter shared by every query: no lock on the query path, and
// concurrent queries still each take a distinct turn.
//
// The counter is not reset when the set changes (a health transition): start is the count modulo
// the current size, so the cycle carries on over the new set rather than restarting at its first
// address, which would overload that address after every flap.
type RoundRobin struct {
	next atomic.Uint64
}

// Pick implements Policy.
func (r *RoundRobin) Pick(s *Set, n int) Picks {
	size := s.Len()
	if size == 0 {
		return Picks{}
	}
	turn := r.next.Add(1) - 1
	return rotation(int(turn%uint64(size)), size, n)
}
