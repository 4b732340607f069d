package pool

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
)

// fuzzStatic is the Corefile's backend beside a fuzzed list: a list may not name it again.
var fuzzStatic = []Backend{{Addr: netip.MustParseAddr("10.0.0.1"), Weight: 1, Priority: 100}}

// FuzzBackendsFile: any file gives a list or an error that names the file and a line holding a
// backend (or, for a list too long, the file). A list has one backend per line that is not
// blank or a comment, in order, each the address its line starts with, none twice and none the
// Corefile's.
func FuzzBackendsFile(f *testing.F) {
	f.Add("# head\n\n10.0.0.2 weight 3 # note\n10.0.0.3 priority 50 drain until 2026-12-24T18:00:00Z kernel upgrade\n")
	f.Add("10.0.0.2\n10.0.0.2\n")
	f.Add("10.0.0.1\n")
	f.Add("::ffff:10.0.0.4 weight 1000\n2001:db8::1 priority 255 drain\n")
	f.Add("fe80::1%eth0\n0.0.0.0\n255.255.255.255\n224.0.0.1\n")
	f.Add("10.0.0.2 weight\n")
	f.Add("10.0.0.2 drain weight 3\n")
	f.Add("\t10.0.0.2\r\n10.0.0.3\v#\n")
	f.Fuzz(func(t *testing.T, text string) {
		list, err := parseBackendsFileData("f", []byte(text), fuzzStatic)
		lines := strings.Split(text, "\n")
		var words [][]string // of each line, comment removed
		for _, line := range lines {
			line, _, _ = strings.Cut(line, "#")
			words = append(words, strings.Fields(line))
		}
		if err != nil {
			if list != nil {
				t.Fatalf("a list and an error: %v", err)
			}
			var n int
			if _, scanErr := fmt.Sscanf(err.Error(), "f:%d: ", &n); scanErr == nil {
				if n < 1 || n > len(lines) || len(words[n-1]) == 0 {
					t.Fatalf("error %q names line %d, which holds no backend", err, n)
				}
				return
			}
			if !strings.HasPrefix(err.Error(), "f: ") {
				t.Fatalf("error %q names neither the file nor a line", err)
			}
			return
		}
		seen := map[netip.Addr]bool{fuzzStatic[0].Addr: true}
		i := 0
		for n, w := range words {
			if len(w) == 0 {
				continue
			}
			if i == len(list) {
				t.Fatalf("line %d (%q) gave no backend, and no error", n+1, lines[n])
			}
			b := list[i]
			if addr, err := ParseAddr(w[0]); err != nil || addr != b.Addr {
				t.Fatalf("line %d (%q) gave backend %s", n+1, lines[n], b.Addr)
			}
			if seen[b.Addr] {
				t.Fatalf("backend %s twice in the list, or the Corefile's", b.Addr)
			}
			seen[b.Addr] = true
			if b.Weight < 1 || b.Weight > MaxWeight || b.Priority < 1 {
				t.Fatalf("line %d (%q): weight %d priority %d", n+1, lines[n], b.Weight, b.Priority)
			}
			i++
		}
		if i != len(list) {
			t.Fatalf("%d backends from %d lines", len(list), i)
		}
	})
}

// FuzzEtcdBackends: every key of a prefix is a backend or skipped, never both; a backend's
// address is its own key's; a skipped key is named by its full key, prefix and all.
func FuzzEtcdBackends(f *testing.F) {
	// The pairs are lines of key, a tab, and value.
	f.Add("/p/", "a/b\t\n10.0.0.1\t\n10.0.0.2\tweight heavy\n10.0.0.3\tpriority 50\n10.0.0.4\t")
	f.Add("/healthdns/app.lan/", "2001:db8::1\tweight 2 drain until 2026-12-24T18:00:00Z disk\n::ffff:10.0.0.5\t\n10.0.0.5\t")
	f.Add("", "10.0.0.9 weight 3\t\n\t10.0.0.9\n10.0.0.8\tdrain weight 2")
	f.Fuzz(func(t *testing.T, prefix, pairs string) {
		kvs := map[string]string{}
		for _, line := range strings.Split(pairs, "\n") {
			k, v, _ := strings.Cut(line, "\t")
			kvs[k] = v
		}
		list, skipped, err := parseEtcdBackends(prefix, kvs, fuzzStatic)
		if err != nil {
			t.Fatalf("%d keys refused as a whole: %v", len(kvs), err)
		}
		wasSkipped := map[string]bool{}
		for _, s := range skipped {
			k, ok := strings.CutPrefix(s.key, prefix)
			if _, known := kvs[k]; !ok || !known {
				t.Fatalf("skipped %q, not a full key of prefix %q", s.key, prefix)
			}
			if wasSkipped[k] {
				t.Fatalf("key %q skipped twice", s.key)
			}
			wasSkipped[k] = true
		}
		seen := map[netip.Addr]bool{fuzzStatic[0].Addr: true}
		fromKeys := map[netip.Addr]string{}
		for k := range kvs {
			if wasSkipped[k] {
				continue
			}
			if addr, err := ParseAddr(k); err == nil {
				fromKeys[addr] = k
			}
		}
		for _, b := range list {
			if _, ok := fromKeys[b.Addr]; !ok {
				t.Fatalf("backend %s from no key that was kept (keys %q, skipped %v)", b.Addr, pairs, skipped)
			}
			if seen[b.Addr] {
				t.Fatalf("backend %s twice in the list, or the Corefile's", b.Addr)
			}
			seen[b.Addr] = true
		}
		if len(list)+len(skipped) != len(kvs) {
			t.Fatalf("%d keys gave %d backends and %d skipped", len(kvs), len(list), len(skipped))
		}
	})
}
