package pool

import (
	"net/netip"
	"strings"
	"testing"
)

// TestParseBackendsFileData: comments, blank lines and the backend words; errors name the line.
func TestParseBackendsFileData(t *testing.T) {
	static := []Backend{{Addr: netip.MustParseAddr("10.0.0.1")}}
	list, err := parseBackendsFileData("f", []byte("# head\n\n10.0.0.2 weight 3 # note\n10.0.0.3 priority 50 drain until 2026-12-24T18:00:00Z kernel upgrade\n"), static)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 2 || list[0].Weight != 3 || list[1].Priority != 50 || list[1].Drain.Reason != "kernel upgrade" {
		t.Errorf("parsed %+v", list)
	}
	for text, want := range map[string]string{
		"10.0.0.2\n10.0.0.2\n": "f:2: backend 10.0.0.2 listed twice (first in line 1)",
		"10.0.0.1\n":           "f:1: backend 10.0.0.1 listed twice (first in the Corefile)",
		"10.0.0.2 speed 3\n":   "f:1: unknown backend option 'speed'",
	} {
		_, err := parseBackendsFileData("f", []byte(text), static)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: error %v, want %q", text, err, want)
		}
	}
	// In etcd each key is a backend: a bad one is skipped, and the others make the list.
	list, skipped, err := parseEtcdBackends("/p/", map[string]string{
		"a/b": "", "10.0.0.1": "", "10.0.0.2": "weight heavy", "10.0.0.3": "priority 50", "10.0.0.4": "",
	}, static)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 2 || list[0].Addr.String() != "10.0.0.3" || list[0].Priority != 50 || list[1].Addr.String() != "10.0.0.4" {
		t.Errorf("etcd list %+v, want 10.0.0.3 and 10.0.0.4", list)
	}
	wantSkipped := []skippedKey{
		{"/p/10.0.0.1", "backend 10.0.0.1 listed twice (also the Corefile)"},
		{"/p/10.0.0.2", "invalid weight 'heavy'"},
		{"/p/a/b", "invalid address 'a/b'"},
	}
	if len(skipped) != len(wantSkipped) {
		t.Fatalf("skipped %+v, want %+v", skipped, wantSkipped)
	}
	for i, w := range wantSkipped {
		if skipped[i].key != w.key || !strings.HasPrefix(skipped[i].err, w.err) {
			t.Errorf("skipped[%d] = %+v, want %+v", i, skipped[i], w)
		}
	}
}
