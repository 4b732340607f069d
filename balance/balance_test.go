package balance

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
)

// addrs returns n distinct addresses.
func addrs(n int) []netip.Addr {
	out := make([]netip.Addr, n)
	for i := range out {
		out[i] = netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
	}
	return out
}

// skewed returns n weights where the first address outweighs the rest a thousand to one, so that
// Weighted's redraws mostly repeat and its in-order completion gets exercised.
func skewed(n int) []uint32 {
	w := make([]uint32, n)
	for i := range w {
		w[i] = 1
	}
	if n > 0 {
		w[0] = 1000
	}
	return w
}

type namedPolicy struct {
	name string
	p    Policy
}

// policies returns fresh instances in a fixed order, so subtest names are stable.
func policies() []namedPolicy {
	return []namedPolicy{{"random", Random{}}, {"round_robin", &RoundRobin{}}, {"weighted", Weighted{}}}
}

func TestPickCountAndDistinct(t *testing.T) {
	tests := []struct {
		name    string
		size, n int
		want    int
	}{
		{"one answer", 100, 1, 1},
		{"three answers", 100, 3, 3},
		{"eight answers", 100, 8, 8},
		{"every address", 8, 8, 8},
		{"more answers than addresses", 3, 8, 3},
		{"one address", 1, 3, 1},
		{"empty set", 0, 3, 0},
		{"zero answers", 5, 0, 0},
		{"negative answers", 5, -1, 0},
		{"answers capped at MaxAnswers", 100, MaxAnswers + 10, MaxAnswers},
		{"MaxAnswers of MaxAnswers", MaxAnswers, MaxAnswers, MaxAnswers},
	}
	for _, pol := range policies() {
		for _, tc := range tests {
			sets := map[string]*Set{
				"uniform": NewSet(addrs(tc.size), nil),
				"skewed":  NewSet(addrs(tc.size), skewed(tc.size)),
			}
			for weights, s := range sets {
				t.Run(fmt.Sprintf("%s/%s/%s", pol.name, tc.name, weights), func(t *testing.T) {
					for range 200 {
						checkPicks(t, pol.p.Pick(s, tc.n), tc.size, tc.want)
					}
				})
			}
		}
		t.Run(pol.name+"/nil set", func(t *testing.T) {
			checkPicks(t, pol.p.Pick(nil, 3), 0, 0)
		})
	}
}

// checkPicks fails unless p holds want distinct indexes below size.
func checkPicks(t *testing.T, p Picks, size, want int) {
	t.Helper()
	if p.N != want {
		t.Fatalf("%d picks, want %d", p.N, want)
	}
	seen := make(map[uint16]bool, p.N)
	for _, i := range p.Idx[:p.N] {
		if int(i) >= size || seen[i] {
			t.Fatalf("index %d out of range or repeated in %v (size %d)", i, p.Idx[:p.N], size)
		}
		seen[i] = true
	}
}

func TestPickAllocatesNothing(t *testing.T) {
	sets := map[string]*Set{
		"uniform": NewSet(addrs(100), nil),
		"skewed":  NewSet(addrs(100), skewed(100)),
	}
	for _, pol := range policies() {
		var p Policy = pol.p // through the interface, as the handler calls it
		for weights, s := range sets {
			for _, n := range []int{1, 8, MaxAnswers} {
				t.Run(fmt.Sprintf("%s/%s/answers=%d", pol.name, weights, n), func(t *testing.T) {
					if a := testing.AllocsPerRun(1000, func() { p.Pick(s, n) }); a != 0 {
						t.Errorf("%.1f allocations per pick, want 0", a)
					}
				})
			}
		}
	}
}

func TestNew(t *testing.T) {
	good := []struct {
		name string
		want Policy
	}{
		{"random", Random{}},
		{"round_robin", &RoundRobin{}},
		{"weighted", Weighted{}},
	}
	for _, tc := range good {
		t.Run(tc.name, func(t *testing.T) {
			p, err := New(tc.name)
			if err != nil {
				t.Fatalf("New(%q): %v", tc.name, err)
			}
			if fmt.Sprintf("%T", p) != fmt.Sprintf("%T", tc.want) {
				t.Fatalf("New(%q) = %T, want %T", tc.name, p, tc.want)
			}
		})
	}
	// Two round robin policies must not share a counter: each pool cycles on its own.
	a, _ := New("round_robin")
	b, _ := New("round_robin")
	if a == b {
		t.Error("New returned the same round robin twice")
	}

	for _, name := range []string{"", "fastest", "Random", "round-robin", "weighted "} {
		t.Run("bad "+name, func(t *testing.T) {
			p, err := New(name)
			if err == nil {
				t.Fatalf("New(%q) = %T, want an error", name, p)
			}
			msg := err.Error()
			for _, want := range []string{fmt.Sprintf("%q", name), "random", "round_robin", "weighted"} {
				if !strings.Contains(msg, want) {
					t.Errorf("error %q does not mention %s", msg, want)
				}
			}
		})
	}
}
