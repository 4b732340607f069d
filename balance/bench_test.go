package balance

import (
	"fmt"
	"testing"
)

// benchWeights spreads weights over 1..10, so Weighted's alias table has real aliases and its
// redraws sometimes repeat; the other policies ignore weights.
func benchWeights(n int) []uint32 {
	w := make([]uint32, n)
	for i := range w {
		w[i] = uint32(i%10 + 1)
	}
	return w
}

// BenchmarkPick measures one answer's pick through the Policy interface, as the handler makes it.
// Time per pick should grow with answers but not with pool.
func BenchmarkPick(b *testing.B) {
	for _, pol := range policies() {
		var p Policy = pol.p
		for _, n := range []int{1, 3, 8} {
			for _, size := range []int{3, 100, 1000} {
				s := NewSet(addrs(size), benchWeights(size))
				b.Run(fmt.Sprintf("%s/answers=%d/pool=%d", pol.name, n, size), func(b *testing.B) {
					b.ReportAllocs()
					for b.Loop() {
						p.Pick(s, n)
					}
				})
			}
		}
	}
}

// BenchmarkPickParallel is BenchmarkPick from every P at once: round robin's shared counter is
// the one contended word on the query path; random and weighted are there to compare against.
func BenchmarkPickParallel(b *testing.B) {
	for _, pol := range policies() {
		var p Policy = pol.p
		for _, n := range []int{1, 3, 8} {
			const size = 100
			s := NewSet(addrs(size), benchWeights(size))
			b.Run(fmt.Sprintf("%s/answers=%d/pool=%d", pol.name, n, size), func(b *testing.B) {
				b.ReportAllocs()
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						p.Pick(s, n)
					}
				})
			})
		}
	}
}

// BenchmarkNewSet measures building the alias table, paid once per health snapshot, not per query.
func BenchmarkNewSet(b *testing.B) {
	for _, size := range []int{3, 100, 1000} {
		a, w := addrs(size), benchWeights(size)
		b.Run(fmt.Sprintf("pool=%d", size), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				NewSet(a, w)
			}
		})
	}
}
