package balance

import "net/netip"

// Set is an immutable list of addresses with their weights, and the alias table that makes a
// weighted pick O(1) whatever the set's size (Vose's method).
type Set struct {
	Addrs   []netip.Addr
	Weights []uint32

	prob  []uint64 // per column: the chance, scaled to 2^32, that the column keeps its own index
	alias []uint16 // per column: the index taken otherwise
}

// NewSet builds a Set. weights may be nil (all 1); otherwise it has one weight per address.
func NewSet(addrs []netip.Addr, weights []uint32) *Set {
	s := &Set{Addrs: addrs, Weights: weights}
	if s.Weights == nil {
		s.Weights = make([]uint32, len(addrs))
		for i := range s.Weights {
			s.Weights[i] = 1
		}
	}
	if len(s.Weights) != len(addrs) {
		panic("balance: NewSet needs one weight per address")
	}
	s.buildAlias()
	return s
}

// Len returns the number of addresses.
func (s *Set) Len() int {
	if s == nil {
		return 0
	}
	return len(s.Addrs)
}

const scale = 1 << 32

func (s *Set) buildAlias() {
	n := len(s.Weights)
	if n == 0 {
		return
	}
	var total uint64
	for _, w := range s.Weights {
		total += uint64(max(w, 1))
	}
	s.prob = make([]uint64, n)
	s.alias = make([]uint16, n)
	// Work in integers: a column's share is weight*n, and a full column holds total.
	scaled := make([]uint64, n)
	var small, large []int
	for i, w := range s.Weights {
		scaled[i] = uint64(max(w, 1)) * uint64(n)
		if scaled[i] < total {
			small = append(small, i)
		} else {
			large = append(large, i)
		}
	}
	for len(small) > 0 && len(large) > 0 {
		l := small[len(small)-1]
		small = small[:len(small)-1]
		g := large[len(large)-1]
		s.prob[l] = scaled[l] * scale / total
		s.alias[l] = uint16(g)
		scaled[g] -= total - scaled[l]
		if scaled[g] < total {
			large = large[:len(large)-1]
			small = append(small, g)
		}
	}
	for _, i := range append(small, large...) {
		s.prob[i] = scale // rounding leaves these exactly full
	}
}

// weightedIndex draws one index with probability weight/total, from two uniform numbers.
func (s *Set) weightedIndex(column uint32, coin uint32) int {
	if uint64(coin) < s.prob[column] {
		return int(column)
	}
	return int(s.alias[column])
}
