package balance

import "testing"

func TestRandomFirstPickUniform(t *testing.T) {
	const size, draws = 10, 100_000
	s := NewSet(addrs(size), nil)
	var counts [size]float64
	for range draws {
		counts[Random{}.Pick(s, 1).Idx[0]]++
	}
	var chi2 float64
	const want = float64(draws) / size
	for _, c := range counts {
		chi2 += (c - want) * (c - want) / want
	}
	// Nine degrees of freedom: a uniform draw exceeds 70 with chance 1.5e-11. Anything that
	// favours one address by even 2% of its share lands far above.
	if chi2 > 70 {
		t.Fatalf("first picks %v: chi-square %.1f over 9 degrees of freedom", counts, chi2)
	}
}

func TestRandomIsRotation(t *testing.T) {
	const size = 5
	s := NewSet(addrs(size), nil)
	for range 100 {
		p := Random{}.Pick(s, 3)
		for k := 1; k < p.N; k++ {
			if want := (p.Idx[k-1] + 1) % size; p.Idx[k] != want {
				t.Fatalf("answer %v is not a rotation", p.Idx[:p.N])
			}
		}
	}
}
