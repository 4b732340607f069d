package balance

import (
	"sync"
	"testing"
)

func TestRoundRobinCycles(t *testing.T) {
	tests := []struct {
		name    string
		size, n int
		want    [][]uint16 // successive answers
	}{
		{"one answer", 3, 1, [][]uint16{{0}, {1}, {2}, {0}, {1}, {2}, {0}}},
		{"two of three", 3, 2, [][]uint16{{0, 1}, {1, 2}, {2, 0}, {0, 1}}},
		{"all of four", 4, 8, [][]uint16{{0, 1, 2, 3}, {1, 2, 3, 0}, {2, 3, 0, 1}, {3, 0, 1, 2}, {0, 1, 2, 3}}},
		{"one address", 1, 1, [][]uint16{{0}, {0}, {0}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := NewSet(addrs(tc.size), nil)
			rr := &RoundRobin{}
			for k, want := range tc.want {
				p := rr.Pick(s, tc.n)
				if got := p.Idx[:p.N]; !equal(got, want) {
					t.Fatalf("answer %d = %v, want %v", k, got, want)
				}
			}
		})
	}
}

// TestRoundRobinCarriesOverSetChange pins that the turn is not reset when the set changes: the
// next start is the running count modulo the new size.
func TestRoundRobinCarriesOverSetChange(t *testing.T) {
	rr := &RoundRobin{}
	three, five := NewSet(addrs(3), nil), NewSet(addrs(5), nil)
	for range 4 {
		rr.Pick(three, 1)
	}
	if got := rr.Pick(five, 1).Idx[0]; got != 4 {
		t.Fatalf("fifth pick, from a set of five, = %d, want 4", got)
	}
}

func TestRoundRobinConcurrent(t *testing.T) {
	const size, goroutines, picks = 4, 8, 1000
	s := NewSet(addrs(size), nil)
	rr := &RoundRobin{}
	counts := make([][size]int, goroutines)
	var wg sync.WaitGroup
	for g := range counts {
		wg.Go(func() {
			for range picks {
				p := rr.Pick(s, 2)
				if p.N != 2 || p.Idx[1] != (p.Idx[0]+1)%size {
					t.Errorf("answer %v is not a rotation of two", p.Idx[:p.N])
					return
				}
				counts[g][p.Idx[0]]++
			}
		})
	}
	wg.Wait()
	var total [size]int
	for _, c := range counts {
		for i, n := range c {
			total[i] += n
		}
	}
	// Every pick takes its own turn of the atomic counter, so whatever the interleaving the
	// 8000 starts split exactly evenly.
	if want := goroutines * picks / size; total != [size]int{want, want, want, want} {
		t.Fatalf("concurrent starts %v, want %d each", total, want)
	}
}

func equal(a, b []uint16) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
