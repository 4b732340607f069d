package main

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

func TestObservation(t *testing.T) {
	dnsSys, vipSys := system{}, system{vip: true}
	for _, tc := range []struct {
		o               observation
		s               system
		steady, steered bool
	}{
		{observation{"b1", "b2"}, dnsSys, true, false},
		{observation{"b2", "b1"}, dnsSys, true, false},
		{observation{"b1"}, dnsSys, false, false}, // b2 missing: not yet in service
		{observation{"b2"}, dnsSys, false, true},
		{nil, dnsSys, false, false}, // no answer says nothing
		{observation{"b1"}, vipSys, true, false},
		{observation{"b2"}, vipSys, false, true},
		{nil, vipSys, false, false},
	} {
		if got := tc.o.steady(tc.s); got != tc.steady {
			t.Errorf("%v (vip %v): steady = %v, want %v", tc.o, tc.s.vip, got, tc.steady)
		}
		if got := tc.o.steered(); got != tc.steered {
			t.Errorf("%v: steered = %v, want %v", tc.o, got, tc.steered)
		}
	}
}

func TestTable(t *testing.T) {
	rows := []row{{
		s:      system{name: "healthdns", settings: "tuned"},
		steer:  []time.Duration{500 * time.Millisecond, 300 * time.Millisecond, 400 * time.Millisecond},
		flaps:  2,
		polled: 100,
	}}
	var b bytes.Buffer
	printTable(&b, rows, 3, time.Minute)
	want := "| healthdns | tuned | 400 ms | 500 ms | 2 (of 100 polls) |"
	if !strings.Contains(b.String(), want) {
		t.Errorf("table:\n%s\nwant a row %q", b.String(), want)
	}
}

// Every system the table promises must have a start function and a name.
func TestSystems(t *testing.T) {
	for _, s := range systems() {
		if s.name == "" || s.settings == "" || s.start == nil {
			t.Errorf("incomplete system %+v", s)
		}
	}
}
