package balance

import (
	"fmt"
	"net/netip"
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

// BenchmarkHashPick measures a sticky answer as the handler would make it, client key included,
// beside random's pick on the same set. Clients vary, so the table's rows come from all over it
// as they would under real traffic. Time per pick should not grow with pool.
func BenchmarkHashPick(b *testing.B) {
	clients := make([]netip.Addr, 1024)
	for i := range clients {
		clients[i] = netip.AddrFrom4([4]byte{100, byte(i >> 8), byte(i), 7})
	}
	for _, n := range []int{1, 3, 8} {
		for _, size := range []int{3, 100, 1000} {
			s := NewSet(addrs(size), benchWeights(size))
			table := NewHashTable(s)
			b.Run(fmt.Sprintf("hash/answers=%d/pool=%d", n, size), func(b *testing.B) {
				b.ReportAllocs()
				i := 0
				for b.Loop() {
					key := ClientKey(clients[i%len(clients)], 24)
					table.Pick(key[:], n)
					i++
				}
			})
			var random Policy = Random{}
			b.Run(fmt.Sprintf("random/answers=%d/pool=%d", n, size), func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					random.Pick(s, n)
				}
			})
		}
	}
}

// BenchmarkNewHashTable measures ranking every backend for every bucket, paid once per health
// snapshot of a pool with the hash policy, not per query.
func BenchmarkNewHashTable(b *testing.B) {
	for _, size := range []int{3, 100, 1000} {
		s := NewSet(addrs(size), benchWeights(size))
		b.Run(fmt.Sprintf("pool=%d", size), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				NewHashTable(s)
			}
		})
	}
}
