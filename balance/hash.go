package balance

import (
	"encoding/binary"
	"math"
	"net/netip"
)

// hashBuckets is how many buckets a HashTable splits client keys into. A backend's share of
// keys is its share of buckets, which strays from its weight share by about
// sqrt(share*(1-share)/hashBuckets): 0.0033 for 9:1 and 0.0048 for one of four, so that with
// 10,000 clients on top (their own 0.003..0.0043) 9:1 stays within 90% ± 2% and the keys that
// move when one of four equal backends dies stay under 27%, both by more than three standard
// deviations. 8192 rows of hashRanks uint16 are 128 KiB per table.
const hashBuckets = 1 << hashBucketBits

const hashBucketBits = 13

// hashRanks is how many backends of each bucket's rendezvous order a table keeps: answers of up
// to this many addresses are all sticky. More would cost memory (hashBuckets*2 bytes each) for
// answers that DNS clients rarely use past the first few.
const hashRanks = 8

// HashTable answers the same client with the same backends while they stay healthy: weighted
// rendezvous hashing (HRW), precomputed per bucket of client keys.
//
// Rendezvous hashing ranks every backend for a key by a score computed from the key and the
// backend alone, -weight/ln(u) with u uniform in (0,1) from a hash of the two, and answers the
// best. Since a backend's score does not depend on which others are in the set, removing one
// moves only the keys it won (to their second best) and bringing it back moves exactly those
// keys back; that is the property sticky clients need, and Maglev's table only approximates it.
// The scores are exponential races, so the winner is each backend with chance weight/total, and
// the order after it is weighted sampling without replacement, like Weighted's.
//
// Scoring every backend per query would cost O(pool size), so NewHashTable does it once per set:
// a client key hashes to one of hashBuckets buckets, and each bucket stores its backends in
// rendezvous order for the bucket's number. A bucket's scores come from the bucket number and
// the backend's ADDRESS (not its index in the set, which shifts when another backend leaves), so
// the exact move-only-the-dead property holds per bucket, hence per key, between any two tables.
//
// The hashes are fixed functions, not seeded per process: replicas of healthdns, and the same one
// after a restart, send a client to the same backend.
//
// A HashTable is immutable once built, so any number of queries may use it at once. It is
// built only where the hash policy is configured: the pool calls NewHashTable beside NewSet for
// each snapshot of such a zone, and other policies never pay for it.
type HashTable struct {
	set   *Set
	ranks int      // backends kept per bucket: min(set size, hashRanks)
	order []uint16 // bucket b's best backends, best first: order[b*ranks:][:ranks]
}

// NewHashTable ranks s's backends for every bucket. It costs hashBuckets*len(s.Addrs) scores
// (see BenchmarkNewHashTable: about 1 ms at 3 backends, 50 ms at 1,000) and is paid once per
// health snapshot, never per query. A nil or empty s gives a table that answers nothing.
func NewHashTable(s *Set) *HashTable {
	t := &HashTable{set: s, ranks: min(s.Len(), hashRanks)}
	if t.ranks == 0 {
		return t
	}
	ids := make([]uint64, s.Len())
	weights := make([]float64, s.Len())
	for i, a := range s.Addrs {
		ids[i] = addrHash(a)
		weights[i] = float64(weightOf(s.Weights[i]))
	}
	t.order = make([]uint16, hashBuckets*t.ranks)
	var best [hashRanks]float64 // scores of the row being built, best first
	for b := range hashBuckets {
		row := t.order[b*t.ranks:][:t.ranks]
		salt := mix64(uint64(b) + 0x9e3779b97f4a7c15)
		filled := 0
		for i, id := range ids {
			u := uniform(mix64(id ^ salt))
			// Most backends lose to the kept few by far. Since -ln(u) >= 1-u, a backend whose
			// w/(1-u) is below the last kept score cannot enter the row: skip its logarithm,
			// which is most of a build's time. The margin covers the rounding of the log and of
			// this product, so the skip never changes a row; ties still reach the comparison.
			if filled == t.ranks && weights[i]*(1+1e-9) < best[filled-1]*(1-u) {
				continue
			}
			score := -weights[i] / math.Log(u)
			// Insertion into the kept few: the row is short, and most backends lose at once.
			pos := filled
			for pos > 0 && s.outranks(score, i, best[pos-1], int(row[pos-1])) {
				pos--
			}
			if pos == t.ranks {
				continue
			}
			if filled < t.ranks {
				filled++
			}
			copy(best[pos+1:filled], best[pos:filled-1])
			copy(row[pos+1:filled], row[pos:filled-1])
			best[pos], row[pos] = score, uint16(i)
		}
	}
	return t
}

// outranks reports whether backend i with score a ranks before backend j with score b. Equal
// scores (a 2^-53 chance) are ordered by address, so that the order never depends on positions
// in the set.
func (s *Set) outranks(a float64, i int, b float64, j int) bool {
	if a != b {
		return a > b
	}
	return s.Addrs[i].Less(s.Addrs[j])
}

// uniform maps h to (0,1), from its top 53 bits: never 0 or 1, so that weighted rendezvous's
// score -w/ln(u) is finite and positive.
func uniform(h uint64) float64 {
	return (float64(h>>11) + 0.5) / (1 << 53)
}

// Set returns the set the table ranks: Picks index into its Addrs.
func (t *HashTable) Set() *Set {
	if t == nil {
		return nil
	}
	return t.set
}

// Pick returns up to n distinct backends for a client key, in the order of the key's bucket:
// the same ones for the same key as long as they stay in the set. Past hashRanks addresses the
// answer goes on through the set in order from the first backend, which is not sticky. It
// allocates nothing and takes no lock.
func (t *HashTable) Pick(key []byte, n int) Picks {
	if t == nil {
		return Picks{}
	}
	n = min(n, t.set.Len(), MaxAnswers)
	if n <= 0 {
		return Picks{}
	}
	b := int(keyHash(key) >> (64 - hashBucketBits))
	row := t.order[b*t.ranks:][:t.ranks]
	var p Picks
	for _, i := range row[:min(n, len(row))] {
		p.Idx[p.N] = i
		p.N++
	}
	size := t.set.Len()
	for i := int(row[0]); p.N < n; {
		if i++; i == size {
			i = 0
		}
		if !p.has(i) {
			p.Idx[p.N] = uint16(i)
			p.N++
		}
	}
	return p
}

// ClientKeyLen is the length of a ClientKey.
const ClientKeyLen = 17

// ClientKey returns the key of the network of addr that is bits long (addr masked to a prefix,
// the prefix length last): every client of one /24, say, shares a key, so a resolver's clients
// and a NATed office stay on one backend. Bits outside 0..addr.BitLen() key the whole address.
// The key is an array so that the caller keeps it on the stack: t.Pick(key[:], n) allocates
// nothing.
func ClientKey(addr netip.Addr, bits int) [ClientKeyLen]byte {
	if p, err := addr.Prefix(bits); err == nil {
		addr = p.Addr()
	} else {
		bits = addr.BitLen()
	}
	var k [ClientKeyLen]byte
	a := addr.As16()
	copy(k[:], a[:])
	k[16] = byte(bits)
	return k
}

// keyHash hashes a key eight bytes at a time, each word mixed into the state with mix64 and the
// length last, so that keys of any length spread over the top bits, which choose the bucket.
func keyHash(key []byte) uint64 {
	h := uint64(0x243f6a8885a308d3) // a fixed start, so that every process agrees
	n := uint64(len(key))
	for ; len(key) >= 8; key = key[8:] {
		h = mix64(h ^ binary.LittleEndian.Uint64(key))
	}
	var tail uint64
	for i, c := range key {
		tail |= uint64(c) << (8 * i)
	}
	return mix64(h ^ tail ^ n<<56)
}

// addrHash is the fixed identity of a backend in every bucket's ranking.
func addrHash(a netip.Addr) uint64 {
	b := a.As16()
	return keyHash(b[:])
}

// mix64 is MurmurHash3's 64-bit finalizer: every input bit flips each output bit with chance
// close to 1/2, so a bucket's salt XORed into a backend's hash gives independent-looking scores.
func mix64(h uint64) uint64 {
	h ^= h >> 33
	h *= 0xff51afd7ed558ccd
	h ^= h >> 33
	h *= 0xc4ceb93fe53a87ed
	h ^= h >> 33
	return h
}
