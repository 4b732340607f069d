package balance

import (
	"fmt"
	"math"
	"math/bits"
	"net/netip"
)

// MaxSetSize bounds how many addresses a Set may hold: Picks stores indexes as uint16.
const MaxSetSize = 1 << 16

// Set is an immutable list of addresses with their weights, and the alias table that makes a
// weighted pick O(1) whatever the set's size.
//
// NewSet keeps the slices it is given: callers must not modify them afterwards, since a Set is
// read by many queries at once without a lock.
type Set struct {
	Addrs   []netip.Addr
	Weights []uint32

	total uint64 // the sum of the weights, each counted as weightOf does

	// table is Walker's alias table, built by Vose's method: draw a column uniformly, then keep the
	// column's own index with chance keep/2^32, or take its alias. Column and alias sit side by
	// side so a draw touches one cache line.
	table []column
}

type column struct {
	keep  uint32 // chance, out of 2^32, of answering the column's own index
	alias uint32 // the index answered otherwise
}

// NewSet builds a Set. weights is nil (every address weighs 1) or holds one weight per address;
// setup allows weights 1..1000, and a zero weight counts as 1 so that every healthy address stays
// reachable. It panics when the lengths differ or there are more than MaxSetSize addresses: both
// are programming errors in the caller, not conditions a query can cause.
func NewSet(addrs []netip.Addr, weights []uint32) *Set {
	if weights == nil {
		weights = make([]uint32, len(addrs))
		for i := range weights {
			weights[i] = 1
		}
	}
	if len(weights) != len(addrs) {
		panic(fmt.Sprintf("balance: NewSet got %d weights for %d addresses", len(weights), len(addrs)))
	}
	if len(addrs) > MaxSetSize {
		panic(fmt.Sprintf("balance: NewSet got %d addresses, at most %d fit in Picks", len(addrs), MaxSetSize))
	}
	s := &Set{Addrs: addrs, Weights: weights}
	for _, w := range weights {
		s.total += uint64(weightOf(w))
	}
	s.table = aliasTable(weights)
	return s
}

// weightOf is the weight a draw gives w: a zero weight counts as 1, so that every healthy
// address stays reachable.
func weightOf(w uint32) uint32 { return max(w, 1) }

// Len returns the number of addresses; a nil Set is empty.
func (s *Set) Len() int {
	if s == nil {
		return 0
	}
	return len(s.Addrs)
}

// aliasTable builds the table with Vose's method in exact integer arithmetic. In units where a
// full column holds total (the sum of the weights), index i brings weight*n; each step tops up a
// short column from a tall one, so every column ends full and the only rounding is the final
// scaling of keep to 2^32, an error below 2^-32 per column.
func aliasTable(weights []uint32) []column {
	n := len(weights)
	if n == 0 {
		return nil
	}
	var total uint64
	share := make([]uint64, n) // at most 2^32 * 2^16: no overflow
	for i, w := range weights {
		share[i] = uint64(weightOf(w)) * uint64(n)
		total += uint64(weightOf(w))
	}
	small := make([]uint32, 0, n)
	large := make([]uint32, 0, n)
	for i := range share {
		if share[i] < total {
			small = append(small, uint32(i))
		} else {
			large = append(large, uint32(i))
		}
	}
	table := make([]column, n)
	for len(small) > 0 && len(large) > 0 {
		l := small[len(small)-1]
		small = small[:len(small)-1]
		g := large[len(large)-1]
		// keep = share*2^32/total; share < total, so the 128-bit quotient fits in 32 bits.
		hi, lo := bits.Mul64(share[l], 1<<32)
		keep, _ := bits.Div64(hi, lo, total)
		table[l] = column{keep: uint32(keep), alias: g}
		share[g] -= total - share[l]
		if share[g] < total {
			large = large[:len(large)-1]
			small = append(small, g)
		}
	}
	// What is left is exactly full (the arithmetic is exact). A full column aliases itself, so
	// it answers its own index whatever the coin, and keep need not reach 2^32.
	for _, i := range small {
		table[i] = column{keep: math.MaxUint32, alias: i}
	}
	for _, i := range large {
		table[i] = column{keep: math.MaxUint32, alias: i}
	}
	return table
}

// weightedIndex draws one index with chance weight/total from one uniform 64-bit number: the high
// half picks the column by multiply-shift, the low half is the coin. Multiply-shift skips the
// rejection step of an exact bounded draw; the columns' chances then differ by a relative n/2^32
// at most (under 1e-5 at MaxSetSize), far finer than weights of 1..1000 can express.
func (s *Set) weightedIndex(r uint64) int {
	i := (r >> 32) * uint64(len(s.table)) >> 32
	if c := s.table[i]; uint32(r) >= c.keep {
		return int(c.alias)
	}
	return int(i)
}
