package pool

import (
	"net/netip"
	"strings"
	"testing"
	"unicode/utf8"
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

// TestParseDrainReason: a backend line's reason follows the status API's rule, wherever the
// line comes from; a bad one fails its line, with an error that does not repeat it.
func TestParseDrainReason(t *testing.T) {
	for _, reason := range []string{"kernel upgrade", "Wartung für den Kernel", strings.Repeat("x", MaxDrainReason)} {
		b, err := ParseBackendWords(strings.Fields("10.0.0.1 drain " + reason))
		if err != nil || b.Drain.Reason != reason {
			t.Errorf("reason %q: drain %+v, error %v", reason, b.Drain, err)
		}
	}
	bad := map[string]string{
		"an escape sequence":      "\x1b[31mred",
		"an escape within":        "disk\x1b]0;owned\x07swap",
		"a byte that is no UTF-8": "disk \xff swap",
		"a bidi override":         "disk \u202eswap",
		"257 bytes":               strings.Repeat("x", MaxDrainReason+1),
		"1 MB":                    strings.Repeat("reason ", 1<<20/7),
	}
	for name, reason := range bad {
		t.Run(name, func(t *testing.T) {
			_, err := ParseBackendWords(strings.Fields("10.0.0.1 drain until 2026-12-24T18:00:00Z " + reason))
			if err == nil || !strings.Contains(err.Error(), "backend 10.0.0.1: drain reason") ||
				!strings.Contains(err.Error(), "want at most 256 bytes of printable UTF-8 on one line") {
				t.Fatalf("error %v, want one that names the backend and the rule", err)
			}
			checkQuiet(t, err.Error())

			_, err = parseBackendsFileData("f", []byte("10.0.0.2\n10.0.0.3 drain "+reason+"\n"), nil)
			if err == nil || !strings.HasPrefix(err.Error(), "f:2: backend 10.0.0.3: drain reason") {
				t.Fatalf("backends file: error %v, want one at f:2", err)
			}
			checkQuiet(t, err.Error())

			list, skipped, err := parseEtcdBackends("/p/", map[string]string{"10.0.0.2": "", "10.0.0.3": "drain " + reason}, nil)
			if err != nil || len(list) != 1 || list[0].Addr.String() != "10.0.0.2" ||
				len(skipped) != 1 || skipped[0].key != "/p/10.0.0.3" || !strings.Contains(skipped[0].err, "drain reason") {
				t.Fatalf("etcd: list %+v, skipped %+v, error %v; want 10.0.0.3 skipped for its reason", list, skipped, err)
			}
			checkQuiet(t, skipped[0].err)
		})
	}
}

// checkQuiet fails when msg, bound for the log, carries what the reason rule keeps out of it.
func checkQuiet(t *testing.T, msg string) {
	t.Helper()
	if len(msg) > 1024 || strings.ContainsFunc(msg, unprintable) || strings.ContainsRune(msg, utf8.RuneError) || !utf8.ValidString(msg) {
		t.Errorf("message of %d bytes is not one short printable line: %.200q", len(msg), msg)
	}
}
