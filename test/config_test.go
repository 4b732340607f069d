package test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

const sigReload = syscall.SIGUSR1

func countLines(out, s string) int { return strings.Count(out, s) }

func containsText(out, s string) bool { return strings.Contains(out, s) }

// TestBadCorefiles starts the binary on broken Corefiles: each must exit non-zero, naming the
// file, the line and what was expected.
func TestBadCorefiles(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		block string // the healthdns block, starting on line 3 of the Corefile
		line  int
		want  string
	}{
		{"unknown property", "healthdns a.lan {\n backend 127.0.0.1\n colour blue\n}", 5, "unknown property 'colour'"},
		{"bad ip", "healthdns a.lan {\n backend 127.0.0.256\n}", 4, "invalid address '127.0.0.256'"},
		{"duplicate backend", "healthdns a.lan {\n backend 127.0.0.1\n backend 127.0.0.1\n}", 5, "duplicate backend 127.0.0.1"},
		{"weight 0", "healthdns a.lan {\n backend 127.0.0.1 weight 0\n}", 4, "invalid weight '0'"},
		{"weight 1001", "healthdns a.lan {\n backend 127.0.0.1 weight 1001\n}", 4, "invalid weight '1001'"},
		{"timeout >= interval", "healthdns a.lan {\n backend 127.0.0.1\n interval 1s\n timeout 2s\n}", 6, "timeout 2s must be shorter than interval 1s"},
		{"zero backends", "healthdns a.lan {\n check tcp 80\n}", 3, "no backend"},
		{"unknown policy", "healthdns a.lan {\n backend 127.0.0.1\n policy fastest\n}", 5, `unknown policy "fastest"`},
		{"unknown check", "healthdns a.lan {\n backend 127.0.0.1\n check udp 53\n}", 5, "unknown check 'udp 53'"},
		{"zero interval", "healthdns a.lan {\n backend 127.0.0.1\n interval 0s\n}", 5, "invalid interval '0s'"},
		{"negative timeout", "healthdns a.lan {\n backend 127.0.0.1\n timeout -1s\n}", 5, "invalid timeout '-1s'"},
		{"rise 0", "healthdns a.lan {\n backend 127.0.0.1\n rise 0\n}", 5, "invalid rise '0'"},
		{"fall 0", "healthdns a.lan {\n backend 127.0.0.1\n fall 0\n}", 5, "invalid fall '0'"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			conf := filepath.Join(t.TempDir(), "Corefile")
			text := ".:0 {\n bind 127.0.0.1\n" + tc.block + "\n}\n"
			if err := os.WriteFile(conf, []byte(text), 0o644); err != nil {
				t.Fatal(err)
			}
			cmd := exec.Command(corednsBin, "-conf", conf)
			done := make(chan struct{})
			var out []byte
			var err error
			go func() { out, err = cmd.CombinedOutput(); close(done) }()
			select {
			case <-done:
			case <-time.After(20 * time.Second):
				cmd.Process.Kill()
				t.Fatal("coredns did not exit on a bad Corefile")
			}
			if err == nil {
				t.Fatalf("exit 0 on a bad Corefile:\n%s", out)
			}
			where := conf + ":" + itoa(tc.line) + " - "
			if !strings.Contains(string(out), where) || !strings.Contains(string(out), tc.want) {
				t.Errorf("output does not name %q and %q:\n%s", where, tc.want, out)
			}
		})
	}
}

func itoa(n int) string { return strconv.Itoa(n) }

func TestPluginListed(t *testing.T) {
	out, err := exec.Command(corednsBin, "-plugins").CombinedOutput()
	if err != nil {
		t.Fatal(err)
	}
	// CoreDNS 1.14 prints names without the "dns." prefix that caddy keys them by.
	if !strings.Contains("\n"+string(out), "\nhealthdns\n") {
		t.Errorf("-plugins does not list healthdns:\n%s", out)
	}
}
