package healthdns

import (
	"bytes"
	"errors"
	golog "log"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/coredns/caddy"
	"github.com/coredns/caddy/caddyfile"
	"github.com/coredns/coredns/core/dnsserver"

	"github.com/healthdns/healthdns/balance"
	"github.com/healthdns/healthdns/health"
	"github.com/healthdns/healthdns/pool"
	"github.com/healthdns/healthdns/status"
	"github.com/healthdns/healthdns/test/testkit"
)

func TestServerAddrs(t *testing.T) {
	got := serverAddrs([]string{"127.0.0.1", "::1"})
	if len(got) != 2 || got[0] != netip.MustParseAddr("127.0.0.1") || got[1] != netip.MustParseAddr("::1") {
		t.Fatalf("bound: %v", got)
	}
	for _, a := range serverAddrs(nil) {
		if a.IsUnspecified() || a.IsLinkLocalUnicast() {
			t.Errorf("wildcard gave %s", a)
		}
	}
	if len(serverAddrs(nil)) == 0 {
		t.Error("wildcard gave no address")
	}
}

// corefileControllers parses a whole Corefile as CoreDNS does and returns a controller over the
// healthdns lines of each server block that has some, with that block's keys, so that a test sees
// the zones a server block gives and the lines a user sees.
func corefileControllers(t *testing.T, corefile string) []*caddy.Controller {
	t.Helper()
	blocks, err := caddyfile.Parse("Corefile", strings.NewReader(corefile), append(slices.Clone(dnsserver.Directives), pluginName))
	if err != nil {
		t.Fatal(err)
	}
	var cs []*caddy.Controller
	for _, b := range blocks {
		if tokens := b.Tokens[pluginName]; len(tokens) > 0 {
			c := caddy.NewTestController("dns", "")
			c.Dispenser = caddyfile.NewDispenserTokens("Corefile", tokens)
			c.ServerBlockKeys = b.Keys
			cs = append(cs, c)
		}
	}
	return cs
}

// parseCorefile parses every healthdns block of a Corefile; the first error stops it.
func parseCorefile(t *testing.T, corefile string) ([]poolConfig, error) {
	t.Helper()
	var cfgs []poolConfig
	for _, c := range corefileControllers(t, corefile) {
		got, err := parse(c)
		if err != nil {
			return nil, err
		}
		cfgs = append(cfgs, got...)
	}
	return cfgs, nil
}

// captureLog sends the log (clog writes through the standard logger) to a buffer for the test.
func captureLog(t *testing.T) *bytes.Buffer {
	var buf bytes.Buffer
	golog.SetOutput(&buf)
	t.Cleanup(func() { golog.SetOutput(os.Stderr) })
	return &buf
}

func writeFiles(t *testing.T, files map[string]string) {
	t.Helper()
	for path, text := range files {
		if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// TestCorefileExample: the example the README starts from parses, and without a warning.
func TestCorefileExample(t *testing.T) {
	text, err := os.ReadFile("Corefile.example")
	if err != nil {
		t.Fatal(err)
	}
	logged := captureLog(t)
	cfgs, err := parseCorefile(t, string(text))
	if err != nil {
		t.Fatal(err)
	}
	if len(cfgs) == 0 {
		t.Fatal("no healthdns pool in Corefile.example")
	}
	if out := logged.String(); out != "" {
		t.Errorf("Corefile.example logs %q", out)
	}
}

// TestSetupICMPErrorAtItsPool: on a machine where no ICMP socket opens, setup names the ICMP
// pool's zone and the line of its check (of its healthdns line when the check is the default).
func TestSetupICMPErrorAtItsPool(t *testing.T) {
	noICMP := func() (bool, error) { return false, errors.New("no ping socket and no CAP_NET_RAW") }
	tests := []struct {
		name     string
		corefile string
		want     string
	}{
		{"check icmp", "app.lan db.lan {\n healthdns app.lan {\n  backend 10.0.0.1\n  check icmp\n }\n}",
			"Corefile:4 - Error during parsing: zone app.lan.: no ping socket and no CAP_NET_RAW"},
		{"default check", "db.lan {\n healthdns db.lan {\n  backend 10.0.0.2\n }\n}",
			"Corefile:2 - Error during parsing: zone db.lan.: no ping socket"},
		{"default check alone", "db.lan {\n errors\n healthdns {\n  backend 10.0.0.2\n }\n}",
			"Corefile:3 - Error during parsing: zone db.lan.: no ping socket"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := corefileControllers(t, tc.corefile)[0]
			err := setupWith(c, noICMP)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want it to contain %q", err, tc.want)
			}
		})
	}
}

// TestReadmeCorefiles parses every Corefile the README shows with a healthdns block, so that an
// example cannot drift from what setup accepts. The files an example names (a tls_ca, a script,
// a token file and a status certificate) are made in a temporary directory; a `{ ... }`
// placeholder block is left out.
func TestReadmeCorefiles(t *testing.T) {
	text, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	files := map[string]struct {
		content []byte
		mode    os.FileMode
	}{
		"ca.pem": {testkit.NewCA(t, "test CA").PEM(), 0o644},
		"script": {[]byte("#!/bin/sh\nexit 0\n"), 0o755},
		"token":  {[]byte(testToken + "\n"), 0o600}, // a token file others may read is refused
	}
	paths := map[string]string{}
	for name, f := range files {
		paths[name] = filepath.Join(dir, name)
		if err := os.WriteFile(paths[name], f.content, f.mode); err != nil {
			t.Fatal(err)
		}
	}
	pathRE := regexp.MustCompile(`(tls_ca|check exec|notify exec|token|state) (/\S+)`)
	statusTLSRE := regexp.MustCompile(`tls /\S+ /\S+`)
	statusCert, statusKey := statusCert(t, "status")
	corefileStart := regexp.MustCompile(`^[.\w:/-]+( [.\w:/-]+)* \{$`) // a server block's keys
	n := 0
	for _, b := range fencedBlocks(string(text)) {
		corefile := b
		first, _, _ := strings.Cut(corefile, "\n")
		if !corefileStart.MatchString(first) || !strings.Contains(corefile, "healthdns") || strings.Contains(corefile, "{ ... }") {
			continue
		}
		corefile = pathRE.ReplaceAllStringFunc(corefile, func(m string) string {
			switch {
			case strings.HasPrefix(m, "tls_ca"):
				return "tls_ca " + paths["ca.pem"]
			case strings.HasPrefix(m, "token"):
				return "token " + paths["token"]
			case strings.HasPrefix(m, "state"):
				return "state " + filepath.Join(dir, "state.json")
			case strings.HasPrefix(m, "notify exec"):
				return "notify exec " + paths["script"]
			}
			return "check exec " + paths["script"]
		})
		corefile = statusTLSRE.ReplaceAllString(corefile, "tls "+statusCert+" "+statusKey)
		n++
		if _, err := parseCorefile(t, corefile); err != nil {
			t.Errorf("a README example does not parse: %v\n%s", err, b)
		}
	}
	if n < 8 {
		t.Errorf("only %d README examples with a healthdns block were found: is the extraction broken?", n)
	}
	t.Logf("%d README examples parsed", n)
}

// fencedBlocks returns the text of every fenced code block of a Markdown document, its
// indentation removed.
func fencedBlocks(doc string) []string {
	var blocks []string
	var cur []string
	in, indent := false, ""
	for _, line := range strings.Split(doc, "\n") {
		trimmed := strings.TrimLeft(line, " ")
		if strings.HasPrefix(trimmed, "```") {
			if in {
				blocks = append(blocks, strings.Join(cur, "\n")+"\n")
				cur = nil
			} else {
				indent = line[:len(line)-len(trimmed)]
			}
			in = !in
			continue
		}
		if in {
			cur = append(cur, strings.TrimPrefix(line, indent))
		}
	}
	return blocks
}

// exec_concurrency is the process's: blocks of one instance that give it must agree, and the
// instance's start sets it, or the default when no block gives it.
func TestExecConcurrency(t *testing.T) {
	in := "healthdns a.lan {\n backend 10.0.0.1\n check tcp 80\n exec_concurrency 8\n}\nhealthdns b.lan {\n backend 10.0.0.2\n check tcp 80\n exec_concurrency 8\n}\nhealthdns c.lan {\n backend 10.0.0.3\n check tcp 80\n exec_concurrency 16\n}"
	err := setupWith(caddy.NewTestController("dns", in), func() (bool, error) { return true, nil })
	if want := "Testfile:14 - Error during parsing: exec_concurrency 16 differs from exec_concurrency 8 of Testfile:4"; err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("error %v, want %q", err, want)
	}

	reg := health.NewRegistry(observer{})
	for _, tc := range []struct{ given, want int }{{8, 8}, {0, health.DefaultExecConcurrency}} {
		l := &lifecycle{reg: reg, listener: status.NewListeners(), execConcurrency: tc.given}
		if err := l.start(); err != nil {
			t.Fatal(err)
		}
		if got := reg.ExecStats().Concurrency; got != tc.want {
			t.Errorf("exec_concurrency %d: the registry runs %d scripts at once, want %d", tc.given, got, tc.want)
		}
		l.stop()
	}

	// A reload that fails once its instance started is undone: the running instance's limit
	// holds again, not the discarded one's.
	running := &lifecycle{reg: reg, listener: status.NewListeners(), execConcurrency: 8}
	if err := running.start(); err != nil {
		t.Fatal(err)
	}
	defer running.stop()
	reg.OpenGeneration()
	failed := &lifecycle{reg: reg, listener: status.NewListeners(), execConcurrency: 16}
	if err := failed.start(); err != nil {
		t.Fatal(err)
	}
	reg.AbortGeneration()
	if got := reg.ExecStats().Concurrency; got != 8 {
		t.Errorf("after a failed reload that gave exec_concurrency 16: the registry runs %d scripts at once, want the running instance's 8", got)
	}
}

// Startup waits a probe timeout per round of scripts that wait for their turns, and counts the
// scripts of a live list's backends too: 100 backends of a backends file (one on a backend
// line, 99 in the file) with a script each, 32 at once by default, are 4 rounds.
func TestScriptRounds(t *testing.T) {
	scripted := testConfig("file.lan.", "10.0.0.1")
	scripted.Checks = []health.Check{{Kind: health.Exec, Command: "/bin/true"}}
	scripted.Spec.Timeout = 2 * time.Second
	scripted.Source = pool.Source{Kind: pool.SourceFile, Path: "/etc/healthdns/file.lan"}
	for i := range 99 {
		scripted.Source.Initial = append(scripted.Source.Initial,
			pool.Backend{Addr: netip.AddrFrom4([4]byte{10, 1, 0, byte(i + 1)}), Weight: 1, Priority: balance.DefaultPriority})
	}
	unscripted := testConfig("tcp.lan.", "10.0.0.2") // a longer timeout, and no script
	unscripted.Spec.Timeout = 3 * time.Second
	reg := health.NewRegistry(observer{})
	pools := []*zonePool{newZonePool(scripted, reg), newZonePool(unscripted, reg)}
	if got, want := scriptRounds(pools, reg.ExecStats().Concurrency), 4*2*time.Second; got != want {
		t.Errorf("scriptRounds = %v, want %v: 4 rounds of 32 scripts for 100 backends, of 2 s each", got, want)
	}
	if got := scriptRounds(pools[1:], reg.ExecStats().Concurrency); got != 0 {
		t.Errorf("scriptRounds without scripts = %v, want 0", got)
	}
}
