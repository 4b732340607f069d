package health

import (
	"errors"
	"testing"
)

func TestHysteresis(t *testing.T) {
	fail := errors.New("refused")
	tests := []struct {
		name       string
		rise, fall int
		first      error
		results    []error
		want       []bool // state after each result
	}{
		{"fall 2 needs two failures", 2, 2, nil, []error{fail, nil, fail, fail}, []bool{true, true, true, false}},
		{"rise 2 needs two successes", 2, 2, fail, []error{nil, fail, nil, nil}, []bool{false, false, false, true}},
		{"fall 1 flips at once", 2, 1, nil, []error{fail, nil, nil}, []bool{false, false, true}},
		{"rise 3", 3, 1, fail, []error{nil, nil, nil}, []bool{false, false, true}},
		{"streak resets on agreement", 2, 3, nil, []error{fail, fail, nil, fail, fail, fail}, []bool{true, true, true, true, true, false}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := hysteresis{rise: tc.rise, fall: tc.fall}
			c := h.first(Result{Err: tc.first})
			if c.Up != (tc.first == nil) || !c.First {
				t.Fatalf("first verdict %+v, want up=%v", c, tc.first == nil)
			}
			for i, err := range tc.results {
				before := h.up
				c, changed := h.observe(err)
				if h.up != tc.want[i] {
					t.Fatalf("after result %d (%v): up=%v, want %v", i, err, h.up, tc.want[i])
				}
				if changed != (before != h.up) || (changed && c.Up != h.up) {
					t.Fatalf("result %d: changed=%v change=%+v, state %v→%v", i, changed, c, before, h.up)
				}
			}
		})
	}
}
