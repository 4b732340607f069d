package main

import (
	"crypto/x509"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/coredns/caddy"

	"github.com/healthdns/healthdns"
	"github.com/healthdns/healthdns/test/testkit"
)

func checkText(t *testing.T, name, corefile string) ([]healthdns.CheckedPool, error) {
	t.Helper()
	file := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(file, []byte(corefile), 0o644); err != nil {
		t.Fatal(err)
	}
	return healthdns.Check(caddy.CaddyfileInput{Contents: []byte(corefile), Filepath: file, ServerTypeName: "dns"})
}

// TestCheckReadmeCorefiles: every Corefile the README shows passes the check, every plugin of
// it set up as a start would (the root package's TestReadmeCorefiles parses only healthdns's
// blocks). The files an example reads are made first.
func TestCheckReadmeCorefiles(t *testing.T) {
	text, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	ca := filepath.Join(dir, "ca.pem")
	script := filepath.Join(dir, "script")
	token := filepath.Join(dir, "token")
	os.WriteFile(ca, testkit.NewCA(t, "test CA").PEM(), 0o644)
	os.WriteFile(script, []byte("#!/bin/sh\nexit 0\n"), 0o755)
	os.WriteFile(token, []byte("check-token-0123456789\n"), 0o600)
	cert, key := testkit.NewCA(t, "status-ca").Issue(t, "status", []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, "127.0.0.1")
	files := regexp.MustCompile(`(tls_ca|check exec|notify exec|token|state) (/\S+)`)
	statusTLS := regexp.MustCompile(`tls /\S+ /\S+`)
	block := regexp.MustCompile("(?ms)^```[a-z]*\n(.*?)^```")
	serverBlock := regexp.MustCompile(`^[.\w:/-]+( [.\w:/-]+)* \{$`)
	n := 0
	for _, m := range block.FindAllStringSubmatch(string(text), -1) {
		corefile := m[1]
		first, _, _ := strings.Cut(corefile, "\n")
		if !serverBlock.MatchString(first) || !strings.Contains(corefile, "healthdns") || strings.Contains(corefile, "{ ... }") {
			continue
		}
		corefile = files.ReplaceAllStringFunc(corefile, func(s string) string {
			kind, _, _ := strings.Cut(s, " /")
			return kind + " " + map[string]string{"tls_ca": ca, "check exec": script, "notify exec": script, "token": token, "state": filepath.Join(dir, "state.json")}[kind]
		})
		corefile = statusTLS.ReplaceAllString(corefile, "tls "+cert+" "+key)
		n++
		pools, err := checkText(t, "Corefile", corefile)
		if err != nil || len(pools) == 0 {
			t.Errorf("a README example fails the check: %v (%d pools)\n%s", err, len(pools), m[1])
		}
	}
	if n < 8 {
		t.Errorf("only %d README examples found: is the extraction broken?", n)
	}
	t.Logf("%d README examples checked", n)
}

// TestCheckErrors: a broken Corefile of each kind fails the check with its file and line.
func TestCheckErrors(t *testing.T) {
	dir := t.TempDir()
	weakToken := filepath.Join(dir, "weak")
	os.WriteFile(weakToken, []byte("check-token-0123456789\n"), 0o644)
	pool := func(lines ...string) string {
		return ".:1053 {\n healthdns app.lan {\n  backend 127.0.15.20\n  " + strings.Join(lines, "\n  ") + "\n }\n}\n"
	}
	for _, tc := range []struct{ name, corefile, want string }{
		{"unknown directive", ".:1053 {\n healthdns app.lan {\n  backend 127.0.15.20\n }\n forwardd . 127.0.0.1\n}\n", ":5 - Error during parsing: Unknown directive 'forwardd'"},
		{"unknown property", pool("retries 3"), ":4 - Error during parsing"},
		{"bad backend value", pool("backend 127.0.15.21 weight heavy"), ":4 - Error during parsing: invalid weight 'heavy'"},
		{"bad check", pool("check tcp 70000"), ":4 - Error during parsing"},
		{"zone twice", ".:1053 {\n healthdns app.lan {\n  backend 127.0.15.20\n }\n healthdns app.lan {\n  backend 127.0.15.21\n }\n}\n", ":5 - Error during parsing: zone app.lan. is configured twice"},
		{"missing backends file", pool("backends_file " + filepath.Join(dir, "none")), ":4 - Error during parsing"},
		{"weak token file", pool("status 127.0.0.1:8053 token " + weakToken), ":4 - Error during parsing"},
		{"an unclosed quote", ".:1053 {\n healthdns app.lan {\n  backend \"127.0.15.20\n }\n}\n", "Corefile:3 - Error during parsing: Unexpected EOF"},
		{"a missing import", ".:1053 {\n healthdns app.lan {\n  backend 127.0.15.20\n }\n import " + filepath.Join(dir, "none") + "\n}\n", "Corefile:5 - Error during parsing: File to import not found"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pools, err := checkText(t, "Corefile", tc.corefile)
			if err == nil || !strings.Contains(err.Error(), "Corefile"+tc.want) && !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("check: %v (%d pools); want an error with %q", err, len(pools), tc.want)
			}
			if !regexp.MustCompile(`Corefile:\d+`).MatchString(err.Error()) {
				t.Errorf("check: %v; want the file and line", err)
			}
		})
	}
}

// TestCheckStartsNothing: the check of a Corefile binds none of its ports (they are held here,
// and it passes) and probes none of its backends (a listener here sees no connection).
func TestCheckStartsNothing(t *testing.T) {
	backend, err := net.Listen("tcp", "127.0.15.22:0")
	if err != nil {
		t.Fatal(err)
	}
	defer backend.Close()
	probed := make(chan struct{}, 1)
	go func() {
		if c, err := backend.Accept(); err == nil {
			c.Close()
			probed <- struct{}{}
		}
	}()
	held, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	_, port, _ := net.SplitHostPort(backend.Addr().String())
	corefile := ".:" + strings.TrimPrefix(held.Addr().String(), "127.0.0.1:") + " {\n bind 127.0.0.1\n" +
		" healthdns app.lan {\n  backend 127.0.15.22\n  check tcp " + port + "\n  interval 10ms\n  timeout 5ms\n  status " + held.Addr().String() + "\n }\n}\n"
	pools, err := checkText(t, "Corefile", corefile)
	if err != nil || len(pools) != 1 {
		t.Fatalf("check: %v (%d pools); want app.lan. and no error, its ports held elsewhere", err, len(pools))
	}
	if s := pools[0].String(); !strings.Contains(s, "zone app.lan.") || !strings.Contains(s, "backend 127.0.15.22 weight 1 priority 100") || !strings.Contains(s, "checks: tcp :"+port) {
		t.Errorf("the check prints\n%s\nwant the zone, its backend and its check", s)
	}
	select {
	case <-probed:
		t.Error("the check probed the backend")
	case <-time.After(300 * time.Millisecond):
	}
}
