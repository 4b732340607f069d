package pool

import (
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/healthdns/healthdns/source"
	"github.com/healthdns/healthdns/test/testkit"
)

// TestParseFleetDrains: a drain key holds while its until is to come, and a key that does not
// name an address or hold the JSON object, or whose value was too large to keep, is skipped
// with its error; other state keys are not drains.
func TestParseFleetDrains(t *testing.T) {
	now := time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC)
	state := map[string]source.KeyValue{
		"_group/ipv4":        {Value: "200", ModRevision: 3},
		"_drain/10.0.0.1":    {Value: `{"reason":"kernel upgrade","by":"10.0.0.5:4242","at":"2026-12-04T11:00:00Z"}`, ModRevision: 4},
		"_drain/10.0.0.2":    {Value: `{"until":"2026-12-04T13:00:00Z","by":"ops","at":"2026-12-04T11:30:00Z"}`, ModRevision: 5},
		"_drain/10.0.0.3":    {Value: `{"until":"2026-12-04T11:59:59Z","by":"ops","at":"2026-12-04T11:00:00Z"}`, ModRevision: 6},
		"_drain/web3":        {Value: `{}`, ModRevision: 7},
		"_drain/10.0.0.4":    {Value: `drain`, ModRevision: 8},
		"_drainage/10.0.0.5": {Value: `{}`, ModRevision: 9},
		"_drain/10.0.0.6":    {ModRevision: 10, Size: source.MaxValueSize + 1}, // not kept by source
	}
	drains, skipped := parseFleetDrains("/p/", state)
	if len(drains) != 3 {
		t.Fatalf("drains %+v, want 10.0.0.1, 10.0.0.2 and 10.0.0.3", drains)
	}
	if d3 := drains[netip.MustParseAddr("10.0.0.3")]; d3.At(now) || d3.rev != 6 {
		t.Errorf("10.0.0.3: %+v, want a drain that ended, of revision 6 (for its delete)", d3)
	}
	d1 := drains[netip.MustParseAddr("10.0.0.1")]
	if !d1.At(now) || d1.Reason != "kernel upgrade" || d1.by != "10.0.0.5:4242" || !d1.Until.IsZero() || d1.key != "/p/_drain/10.0.0.1" ||
		!d1.since.Equal(time.Date(2026, 12, 4, 11, 0, 0, 0, time.UTC)) {
		t.Errorf("10.0.0.1: %+v", d1)
	}
	d2 := drains[netip.MustParseAddr("10.0.0.2")]
	if !d2.Until.Equal(time.Date(2026, 12, 4, 13, 0, 0, 0, time.UTC)) || d2.At(d2.Until) {
		t.Errorf("10.0.0.2: %+v, want a drain until 13:00", d2)
	}
	want := map[string]string{"/p/_drain/web3": "invalid address 'web3'", "/p/_drain/10.0.0.4": "want a JSON object",
		"/p/_drain/10.0.0.6": "value of 4097 bytes, over the 4096 bytes a value may hold"}
	if len(skipped) != len(want) {
		t.Fatalf("skipped %+v, want %v", skipped, want)
	}
	for _, k := range skipped {
		if !strings.Contains(k.err, want[k.key]) || want[k.key] == "" {
			t.Errorf("skipped %s: %s, want %q", k.key, k.err, want[k.key])
		}
	}
}

// TestFleetDrainsLoggedOnce: a drain key is logged when a list brings it, not again with every
// list that follows while it is unchanged, whatever its times' offset (a console's, +05:30, not UTC).
func TestFleetDrainsLoggedOnce(t *testing.T) {
	lines := testkit.LogLines(t)
	p := drainPool(t, testConfig("fleet.lan.", "10.0.0.1", "10.0.0.2"), Drain{})
	state := map[string]source.KeyValue{
		"_drain/10.0.0.1": {Value: `{"until":"2999-01-01T12:00:00+05:30","by":"console","at":"2026-12-04T11:00:00+05:30"}`, ModRevision: 4},
	}
	for range 3 {
		p.fleetDrains(state)
	}
	if got := serving(p); !slices.Equal(got, []string{"10.0.0.2"}) {
		t.Errorf("serving %v, want 10.0.0.2 alone: 10.0.0.1 is drained", got)
	}
	if n := strings.Count(strings.Join(lines(), "\n"), "backend 10.0.0.1: drained until"); n != 1 {
		t.Errorf("the drain was logged %d times for three lists that bring it unchanged, want once:\n%s", n, strings.Join(lines(), "\n"))
	}
}
