package test

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/healthdns/healthdns/test/harness"
	"github.com/miekg/dns"
)

// TestBadCorefiles starts the binary on broken Corefiles: each must exit non-zero, and its output
// must name the file, the line and the problem.
func TestBadCorefiles(t *testing.T) {
	t.Parallel()
	// The healthdns block starts on line 3 of the Corefile; lines lists every line the error may
	// fairly point at (for a missing backend, the block's opening or closing line; for timeout
	// against interval, either of the two).
	tests := []struct {
		name  string
		block string
		lines []int
		want  []string // each must appear in the output, case-insensitively
	}{
		{"unknown property", "healthdns a.lan {\n  backend 127.0.0.1\n  colour blue\n }", []int{5}, []string{"colour"}},
		{"bad IPv4", "healthdns a.lan {\n  backend 127.0.0.256\n }", []int{4}, []string{"127.0.0.256"}},
		{"bad IPv6", "healthdns a.lan {\n  backend 2001:db8::zz\n }", []int{4}, []string{"2001:db8::zz"}},
		{"host name instead of IP", "healthdns a.lan {\n  backend app.example\n }", []int{4}, []string{"app.example"}},
		{"duplicate backend", "healthdns a.lan {\n  backend 127.0.0.1\n  backend 127.0.0.1\n }", []int{5}, []string{"duplicate", "127.0.0.1"}},
		{"weight 0", "healthdns a.lan {\n  backend 127.0.0.1 weight 0\n }", []int{4}, []string{"weight"}},
		{"weight 1001", "healthdns a.lan {\n  backend 127.0.0.1 weight 1001\n }", []int{4}, []string{"weight", "1001"}},
		{"timeout equal to interval", "healthdns a.lan {\n  backend 127.0.0.1\n  interval 1s\n  timeout 1s\n }", []int{5, 6}, []string{"timeout", "interval"}},
		{"timeout above interval", "healthdns a.lan {\n  backend 127.0.0.1\n  interval 1s\n  timeout 2s\n }", []int{5, 6}, []string{"timeout", "interval"}},
		{"timeout above default interval", "healthdns a.lan {\n  backend 127.0.0.1\n  timeout 1500ms\n }", []int{5}, []string{"timeout", "interval"}},
		{"zero backends", "healthdns a.lan {\n  check tcp 80\n }", []int{3, 5}, []string{"backend"}},
		{"empty block", "healthdns a.lan", []int{3}, []string{"backend"}},
		{"unknown policy", "healthdns a.lan {\n  backend 127.0.0.1\n  policy fastest\n }", []int{5}, []string{"fastest"}},
		{"unknown check", "healthdns a.lan {\n  backend 127.0.0.1\n  check udp 53\n }", []int{5}, []string{"udp"}},
		{"tcp check without port", "healthdns a.lan {\n  backend 127.0.0.1\n  check tcp\n }", []int{5}, []string{"tcp"}},
		{"zero interval", "healthdns a.lan {\n  backend 127.0.0.1\n  interval 0s\n }", []int{5}, []string{"interval"}},
		{"negative interval", "healthdns a.lan {\n  backend 127.0.0.1\n  interval -1s\n }", []int{5}, []string{"interval"}},
		{"rise 0", "healthdns a.lan {\n  backend 127.0.0.1\n  rise 0\n }", []int{5}, []string{"rise"}},
		{"fall 0", "healthdns a.lan {\n  backend 127.0.0.1\n  fall 0\n }", []int{5}, []string{"fall"}},
		{"answers 65", "healthdns a.lan {\n  backend 127.0.0.1\n  answers 65\n }", []int{5}, []string{"answers"}},
		{"unknown all_down", "healthdns a.lan {\n  backend 127.0.0.1\n  all_down shrug\n }", []int{5}, []string{"shrug"}},
		{"root zone from the server block", "healthdns {\n  backend 127.0.0.1\n }\n forward . 127.0.0.1", []int{3},
			[]string{"root zone", "healthdns app.lan {", "healthdns . {"}},
		{"zone outside the server block", "healthdns other.lan {\n  backend 127.0.0.1\n }", []int{3}, []string{"other.lan.", "outside", "app.lan."}},
		{"missing backends_file", "healthdns a.lan {\n  backends_file /nonexistent/healthdns/a.lan\n }", []int{4}, []string{"backends_file", "/nonexistent/healthdns/a.lan", "no such file"}},
		{"two sources", "healthdns a.lan {\n  backends_file /etc/hostname\n  backends_etcd\n }", []int{5}, []string{"backends_etcd and backends_file (line 4)", "one source"}},
		{"etcd endpoint not a URL", "healthdns a.lan {\n  backends_etcd {\n   endpoint 127.0.0.1:2379\n  }\n }", []int{5}, []string{"invalid etcd endpoint '127.0.0.1:2379'", "http://"}},
		{"etcd unknown property", "healthdns a.lan {\n  backends_etcd {\n   password x\n  }\n }", []int{5}, []string{"unknown backends_etcd property 'password'"}},
		{"missing status certificate", "healthdns a.lan {\n  backend 127.0.0.1\n  status tls /nonexistent/healthdns/cert.pem /nonexistent/healthdns/key.pem\n }", []int{5},
			[]string{"status tls", "open /nonexistent/healthdns/cert.pem: no such file"}},
		{"property twice", "healthdns a.lan {\n  backend 127.0.0.1\n  interval 2s\n  interval 3s\n }", []int{6}, []string{"duplicate 'interval' (first on line 5)"}},
	}
	// The server block's key, where a case needs another than ".".
	blockKeys := map[string]string{"zone outside the server block": "app.lan"}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			conf := filepath.Join(t.TempDir(), "Corefile")
			key := "."
			if k, ok := blockKeys[tc.name]; ok {
				key = k
			}
			text := fmt.Sprintf("%s:%d {\n bind 127.0.0.1\n %s\n}\n", key, harness.FreePort(t), tc.block)
			if err := os.WriteFile(conf, []byte(text), 0o644); err != nil {
				t.Fatal(err)
			}
			out, exited, err := runCoreDNS(t, 10*time.Second, "-conf", conf)
			if !exited {
				t.Fatalf("coredns kept running on a bad Corefile:\n%s\noutput:\n%s", text, out)
			}
			if err == nil {
				t.Fatalf("exit status 0 on a bad Corefile:\n%s\noutput:\n%s", text, out)
			}
			var where []string
			found := false
			for _, l := range tc.lines {
				// The file by name and the line number, not followed by another digit.
				re := regexp.MustCompile(regexp.QuoteMeta(conf) + ":" + fmt.Sprint(l) + `([^0-9]|$)`)
				where = append(where, fmt.Sprintf("%s:%d", conf, l))
				found = found || re.MatchString(out)
			}
			if !found {
				t.Errorf("output does not name the place (one of %v):\n%s", where, out)
			}
			for _, w := range tc.want {
				if !strings.Contains(strings.ToLower(out), strings.ToLower(w)) {
					t.Errorf("output does not name the problem (%q):\n%s", w, out)
				}
			}
			t.Logf("%s", harness.LastLine(out))
		})
	}
}

// TestGoodCorefileDefaults: a block with only backends and a TCP check starts; its zone comes
// from the server block's key and the defaults (policy random, answers 1, ttl 5) show in the
// answers. A block naming two zones serves both.
func TestGoodCorefileDefaults(t *testing.T) {
	t.Parallel()
	const live1, dead, live2 = "127.0.0.119", "127.0.0.120", "127.0.0.121"
	port, _ := harness.StartBackends(t, live1, live2) // nothing listens on dead:port
	s := harness.Start(t, fmt.Sprintf(`defaults.lan:{{PORT}} {
 bind 127.0.0.1
 healthdns {
  backend %[1]s
  backend %[2]s
  backend %[3]s
  check tcp %[4]d
 }
}
.:{{PORT}} {
 bind 127.0.0.1
 healthdns one.lan two.lan {
  backend %[1]s
  check tcp %[4]d
 }
}
`, live1, dead, live2, port))
	harness.Eventually(t, 10*time.Second, func() bool {
		return harness.SameSet(s.Addrs(t, "udp", "one.lan.", dns.TypeA), live1)
	}, "one.lan to answer")
	seen := map[string]int{}
	for range 60 {
		r := s.Query(t, "udp", "defaults.lan.", dns.TypeA)
		got := harness.AnswerAddrs(r)
		if len(got) != 1 {
			t.Fatalf("defaults.lan.: %v, want one address (answers 1)", got)
		}
		if ttl := r.Answer[0].Header().Ttl; ttl != 5 {
			t.Fatalf("default TTL %d, want 5", ttl)
		}
		seen[got[0]]++
	}
	if len(seen) != 2 || seen[dead] != 0 {
		t.Errorf("60 answers under the default random policy: %v, want both live backends and never %s", seen, dead)
	}
	for _, zone := range []string{"one.lan.", "x.two.lan."} {
		if got := s.Addrs(t, "tcp", zone, dns.TypeA); !harness.SameSet(got, live1) {
			t.Errorf("%s: %v, want %s", zone, got, live1)
		}
	}
}

// TestPluginListed: -plugins names healthdns (CoreDNS 1.14 prints bare names; older versions
// printed dns.NAME).
func TestPluginListed(t *testing.T) {
	t.Parallel()
	out, exited, err := runCoreDNS(t, 10*time.Second, "-plugins")
	if !exited || err != nil {
		t.Fatalf("coredns -plugins: exited=%v err=%v\n%s", exited, err, out)
	}
	for _, line := range strings.Split(out, "\n") {
		if l := strings.TrimSpace(line); l == "healthdns" || l == "dns.healthdns" {
			return
		}
	}
	t.Errorf("-plugins does not list healthdns:\n%s", out)
}

// runCoreDNS runs the binary to completion, or kills it after timeout (exited false).
func runCoreDNS(t testing.TB, timeout time.Duration, args ...string) (out string, exited bool, err error) {
	var buf bytes.Buffer
	cmd := exec.Command(harness.Binary(t), args...)
	cmd.Stdout, cmd.Stderr = &buf, &buf
	if err := cmd.Start(); err != nil {
		return "", false, err
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err = <-done:
		return buf.String(), true, err
	case <-time.After(timeout):
		cmd.Process.Kill()
		<-done
		return buf.String(), false, nil
	}
}
