package pool

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/healthdns/healthdns/source"
	"github.com/healthdns/healthdns/test/testkit"
)

// What a backends file or etcd holds reaches the log only through the reason rule: an escape
// sequence or a megabyte of reason is refused at its line or key, and neither is logged. The
// adversarial trial saw both in the log, a 1.4 MB reason as a 1.4 MB line.
const escapeReason = "\x1b[31mred"

var megaReason = strings.Repeat("x", 1<<20)

func TestBackendsFileReasonNeverLogged(t *testing.T) {
	lines := testkit.LogLines(t)
	path := filepath.Join(t.TempDir(), "list")
	good := "10.1.0.2 drain kernel upgrade\n10.1.0.3\n"
	if err := os.WriteFile(path, []byte(good), 0o644); err != nil {
		t.Fatal(err)
	}
	p := listPool(t, newGate(), Source{Kind: SourceFile, Path: path})
	p.setSourceList(backends(t, strings.Split(strings.TrimSpace(good), "\n")...))
	startPool(t, p)
	for _, bad := range []struct{ reason, logged string }{
		{escapeReason, path + ":1: backend 10.1.0.2: drain reason holds U+001B at byte 0"},
		{megaReason, path + ":1: backend 10.1.0.2: drain reason of 1048576 bytes"},
	} {
		// Written aside and renamed over the list, as the README asks: a file written in place
		// may be read empty or half-written, which is not what this test looks at.
		next := path + ".next"
		if err := os.WriteFile(next, []byte("10.1.0.2 drain "+bad.reason+"\n10.1.0.3\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(next, path); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "the refusal logged", func() bool { return strings.Contains(strings.Join(lines(), "\n"), bad.logged) })
	}
	if m := memberOf(p, "10.1.0.2"); m == nil || m.Drain.Reason != "kernel upgrade" {
		t.Errorf("10.1.0.2 is %+v, want the last good list's drain kept; log:\n%s", m, strings.Join(lines(), "\n"))
	}
	checkLogQuiet(t, lines())
}

func TestEtcdReasonNeverLogged(t *testing.T) {
	lines := testkit.LogLines(t)
	cfg := testConfig("app.lan.", "10.1.0.1")
	cfg.Source = Source{Kind: SourceEtcd, Etcd: EtcdSource{Prefix: "/p/"}}
	p := drainPool(t, cfg, Drain{})
	_, skipped, err := parseEtcdBackends("/p/", map[string]string{
		"10.1.0.2": "drain " + escapeReason, "10.1.0.3": "drain " + megaReason,
	}, cfg.Backends)
	if err != nil {
		t.Fatal(err)
	}
	skipped = append(skipped, p.fleetDrains(map[string]source.KeyValue{
		"_drain/10.1.0.1": {Value: `{"reason":"\u001b[31mred","by":"ops","at":"2026-12-04T11:00:00Z"}`, ModRevision: 4},
		"_drain/10.1.0.4": {Value: `{"reason":"` + megaReason + `","by":"ops","at":"2026-12-04T11:00:00Z"}`, ModRevision: 5},
		"_drain/10.1.0.5": {Value: `{"reason":"disk","by":"\u001b[2J","at":"2026-12-04T11:00:00Z"}`, ModRevision: 6},
	})...)
	p.skipped(skipped)
	log := strings.Join(lines(), "\n")
	for _, key := range []string{"/p/10.1.0.2", "/p/10.1.0.3", "/p/_drain/10.1.0.1", "/p/_drain/10.1.0.4", "/p/_drain/10.1.0.5"} {
		if !strings.Contains(log, "etcd key "+key+": ") {
			t.Errorf("key %s not logged as skipped", key)
		}
	}
	if got := serving(p); len(got) != 1 || got[0] != "10.1.0.1" {
		t.Errorf("serving %v, want 10.1.0.1: its drain key was refused", got)
	}
	checkLogQuiet(t, lines())
}

// checkLogQuiet fails on a log line that carries an escape or runs long.
func checkLogQuiet(t *testing.T, lines []string) {
	t.Helper()
	for _, l := range lines {
		checkQuiet(t, l)
	}
}

// A word of a backend line that an error quotes (an address, an option, a time, a number), an
// etcd key a list skips, and an agreement key's value reach the log escaped and bounded: a
// file or an etcd value is written by whoever can write it.
func TestRawWordsQuietInErrors(t *testing.T) {
	mega := strings.Repeat("9", 1<<20)
	for _, words := range [][]string{
		{"\x1b[2J"},
		{mega},
		{"10.0.0.1", "\x1b[31mprio", "2"},
		{"10.0.0.1", mega, "2"},
		{"10.0.0.1", "weight", mega},
		{"10.0.0.1", "weight", "\x1b[31m"},
		{"10.0.0.1", "drain", "until", "\x1b[31m"},
		{"10.0.0.1", "drain", "until", mega},
	} {
		_, err := ParseBackendWords(words)
		if err == nil {
			t.Fatalf("%.40q parsed", words)
		}
		checkQuiet(t, err.Error())
		if strings.Contains(err.Error(), mega[:300]) {
			t.Errorf("error quotes the megabyte word whole: %.100s", err)
		}
	}
	if _, err := ParseBackendWords([]string{"10.0.0.300"}); err == nil || !strings.Contains(err.Error(), "invalid address '10.0.0.300'") {
		t.Errorf("a plain word is not quoted as before: %v", err)
	}

	lines := testkit.LogLines(t)
	cfg := testConfig("app.lan.", "10.1.0.1")
	cfg.Source = Source{Kind: SourceEtcd, Etcd: EtcdSource{Prefix: "/p/"}}
	cfg.Preempt.Never = true
	p := drainPool(t, cfg, Drain{})
	_, skipped, err := parseEtcdBackends("/p/", map[string]string{"\x1b[31m": "", mega: ""}, cfg.Backends)
	if err != nil {
		t.Fatal(err)
	}
	if len(skipped) != 2 {
		t.Fatalf("skipped %d keys, want 2", len(skipped))
	}
	p.skipped(skipped)
	p.agreed(map[string]source.KeyValue{"_group/ipv4": {Value: "\x1b[2J" + mega, ModRevision: 3}}, 3)
	log := strings.Join(lines(), "\n")
	if !strings.Contains(log, `etcd key "/p/\x1b[31m": `) || !strings.Contains(log, "(1048579 bytes)") {
		t.Errorf("the skipped keys are not logged, escaped and cut:\n%.2000s", log)
	}
	checkLogQuiet(t, lines())
}
