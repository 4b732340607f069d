package main

import (
	"slices"
	"testing"
	"time"
)

func TestVariantFlag(t *testing.T) {
	var vs variants
	for _, s := range []string{"plain=", "fast=timeout 90ms, fast_interval 100ms"} {
		if err := vs.Set(s); err != nil {
			t.Fatal(err)
		}
	}
	if len(vs) != 2 || vs[0].name != "plain" || len(vs[0].lines) != 0 ||
		!slices.Equal(vs[1].lines, []string{"timeout 90ms", "fast_interval 100ms"}) {
		t.Errorf("parsed %+v", vs)
	}
	if err := vs.Set("fast_interval 100ms"); err == nil {
		t.Error("a variant without NAME= was taken")
	}
}

func TestQuantileIsNearestRank(t *testing.T) {
	var s []time.Duration
	for i := 1; i <= 10; i++ {
		s = append(s, time.Duration(i))
	}
	for q, want := range map[float64]time.Duration{0.5: 5, 0.9: 9, 1: 10, 0: 1} {
		if got := quantile(s, q); got != want {
			t.Errorf("quantile(%v) = %d, want %d", q, got, want)
		}
	}
}
