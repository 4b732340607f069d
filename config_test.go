package healthdns

import (
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode"

	"github.com/coredns/caddy"

	"github.com/healthdns/healthdns/health"
	"github.com/healthdns/healthdns/pool"
	"github.com/healthdns/healthdns/test/testkit"
)

func TestParseDefaults(t *testing.T) {
	c := caddy.NewTestController("dns", "healthdns app.lan {\n backend 10.0.0.1\n}")
	cfgs, err := parse(c)
	if err != nil {
		t.Fatal(err)
	}
	if len(cfgs) != 1 {
		t.Fatalf("%d pools", len(cfgs))
	}
	got := cfgs[0]
	want := health.Spec{Interval: time.Second, Timeout: 500 * time.Millisecond, Rise: 2, Fall: 2}
	if got.Zone != "app.lan." || got.Spec != want || !slices.Equal(got.Checks, []health.Check{{Kind: health.ICMP}}) || got.Policy != "random" || got.answers != 1 ||
		got.ttl != 5 || got.AllDown != pool.AllDownServeAll || got.nsName != "ns.dns.app.lan." || got.nsAddrs != nil {
		t.Fatalf("defaults: %+v", got)
	}
	if len(got.Backends) != 1 || got.Backends[0] != (pool.Backend{Addr: netip.MustParseAddr("10.0.0.1"), Weight: 1, Priority: 100}) {
		t.Fatalf("backends %+v", got.Backends)
	}
}

func TestParseEverything(t *testing.T) {
	in := `healthdns App.LAN www.app.lan {
		backend 10.0.0.1 weight 9
		backend 2001:db8::1 priority 200
		backend ::ffff:10.0.0.2 priority 50 weight 2
		check tcp 8080
		interval 200ms
		timeout 100ms
		rise 3
		fall 1
		policy weighted
		answers 3
		ttl 0
		all_down fallthrough
		ns ns1.www.app.lan 192.0.2.53 2001:db8::53
		fallthrough other.lan
	}`
	cfgs, err := parse(caddy.NewTestController("dns", in))
	if err != nil {
		t.Fatal(err)
	}
	if len(cfgs) != 2 || cfgs[0].Zone != "app.lan." || cfgs[1].Zone != "www.app.lan." {
		t.Fatalf("zones: %+v", cfgs)
	}
	c := cfgs[0]
	wantSpec := health.Spec{Interval: 200 * time.Millisecond, Timeout: 100 * time.Millisecond, Rise: 3, Fall: 1}
	if c.Spec != wantSpec || !slices.Equal(c.Checks, []health.Check{{Kind: health.TCP, Port: 8080}}) || c.Policy != "weighted" || c.answers != 3 || c.ttl != 0 || c.AllDown != pool.AllDownFallthrough {
		t.Fatalf("config %+v", c)
	}
	wantBackends := []pool.Backend{
		{Addr: netip.MustParseAddr("10.0.0.1"), Weight: 9, Priority: 100},
		{Addr: netip.MustParseAddr("2001:db8::1"), Weight: 1, Priority: 200},
		{Addr: netip.MustParseAddr("10.0.0.2"), Weight: 2, Priority: 50}, // a v4-mapped address is served as IPv4
	}
	for i, b := range wantBackends {
		if c.Backends[i] != b {
			t.Errorf("backend %d = %+v, want %+v", i, c.Backends[i], b)
		}
	}
	if c.nsName != "ns1.www.app.lan." || len(c.nsAddrs) != 2 {
		t.Errorf("ns %s %v", c.nsName, c.nsAddrs)
	}
	if !c.fall.Through("x.other.lan.") || c.fall.Through("x.app.lan.") {
		t.Errorf("fallthrough zones %v", c.fall)
	}
}

// TestParseDrain reads drain with and without an end and a reason, after the other options.
func TestParseDrain(t *testing.T) {
	in := `healthdns app.lan {
		backend 10.0.0.1 drain
		backend 10.0.0.2 weight 3 priority 50 drain until 2026-12-24T18:00:00+01:00 disk swap, ticket 42
		backend 10.0.0.3 drain "kernel upgrade"
		backend 10.0.0.4 drain until 2026-12-24T18:00:00Z
		backend 10.0.0.5
	}`
	cfgs, err := parse(caddy.NewTestController("dns", in))
	if err != nil {
		t.Fatal(err)
	}
	until := time.Date(2026, 12, 24, 17, 0, 0, 0, time.UTC)
	want := []pool.Drain{
		{On: true},
		{On: true, Until: until, Reason: "disk swap, ticket 42"},
		{On: true, Reason: "kernel upgrade"},
		{On: true, Until: until.Add(time.Hour)},
		{},
	}
	for i, d := range want {
		got := cfgs[0].Backends[i].Drain
		if got.On != d.On || !got.Until.Equal(d.Until) || got.Reason != d.Reason {
			t.Errorf("backend %d drain = %+v, want %+v", i, got, d)
		}
	}
	if b := cfgs[0].Backends[1]; b.Weight != 3 || b.Priority != 50 {
		t.Errorf("backend 10.0.0.2 = %+v, want weight 3 priority 50", b)
	}
}

// TestParseChecks reads every form of check, several in one block, and the TLS and fast
// interval properties that go with them.
func TestParseChecks(t *testing.T) {
	dir := t.TempDir()
	script := filepath.Join(dir, "check-db")
	if err := os.WriteFile(script, []byte("#!/bin/sh\nexit 0\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	ca := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(ca, testkit.NewCA(t, "test CA").PEM(), 0o644); err != nil {
		t.Fatal(err)
	}
	in := `healthdns app.lan {
		backend 10.0.0.1
		check tcp 5432
		check http 8080 /healthz expect 200,204,301-302 body "status: ok" host App.LAN.
		check https 8443
		check exec ` + script + ` --host={backend} -q
		check http 8081 /ready body_exact ok
		tls_ca ` + ca + `
		interval 2s
		fast_interval 600ms
		exec_concurrency 64
	}`
	cfgs, err := parse(caddy.NewTestController("dns", in))
	if err != nil {
		t.Fatal(err)
	}
	want := []health.Check{
		{Kind: health.TCP, Port: 5432},
		{Kind: health.HTTP, Port: 8080, Path: "/healthz", Expect: "200,204,301-302", Body: "status: ok", Host: "App.LAN"},
		{Kind: health.HTTPS, Port: 8443, Path: "/", TLSCA: ca},
		{Kind: health.Exec, Command: script, Args: health.JoinArgs([]string{"--host={backend}", "-q"})},
		{Kind: health.HTTP, Port: 8081, Path: "/ready", Body: "ok", BodyExact: true},
	}
	c := cfgs[0]
	if c.execConcurrency != 64 || c.execConcurrencyLine != 11 {
		t.Errorf("exec_concurrency %d on line %d, want 64 on line 11", c.execConcurrency, c.execConcurrencyLine)
	}
	if !slices.Equal(c.Checks, want) {
		t.Errorf("checks\n%+v\nwant\n%+v", c.Checks, want)
	}
	if c.Spec.Fast != 600*time.Millisecond || c.icmpLine != 0 {
		t.Errorf("fast interval %v, icmp line %d", c.Spec.Fast, c.icmpLine)
	}
	if got := c.Checks[3].ExecArgs(); !slices.Equal(got, []string{"--host={backend}", "-q"}) {
		t.Errorf("exec args %q", got)
	}
	for i, name := range []string{"tcp :5432", "http :8080/healthz", "https :8443/", "exec " + script} {
		if c.Checks[i].String() != name {
			t.Errorf("check %d is named %q, want %q", i, c.Checks[i], name)
		}
	}
}

// TestParseCheckFiles refuses the files a check cannot use, at the line that names them.
func TestParseCheckFiles(t *testing.T) {
	dir := t.TempDir()
	plain := filepath.Join(dir, "plain")
	if err := os.WriteFile(plain, []byte("not a script, not a certificate\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, in string
		line     int
		want     string
	}{
		{"exec not executable", "healthdns app.lan {\n backend 10.0.0.1\n check exec " + plain + "\n}", 3, plain + " is not an executable file"},
		{"exec a directory", "healthdns app.lan {\n backend 10.0.0.1\n check exec " + dir + "\n}", 3, dir + " is not an executable file"},
		{"tls_ca not a certificate", "healthdns app.lan {\n backend 10.0.0.1\n check https 443\n tls_ca " + plain + "\n}", 4, "no PEM certificate in it"},
		{"tls_ca and tls_insecure", "healthdns app.lan {\n backend 10.0.0.1\n check https 443\n tls_ca " + plain + "\n tls_insecure\n}", 5, "tls_insecure with tls_ca: give one"},
		{"tls_ca without https", "healthdns app.lan {\n backend 10.0.0.1\n check http 80\n tls_ca " + plain + "\n}", 4, "tls_ca without an https check"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parse(caddy.NewTestController("dns", tc.in))
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.HasPrefix(err.Error(), "Testfile:"+strconv.Itoa(tc.line)+" - ") {
				t.Errorf("error %v, want %q at line %d", err, tc.want, tc.line)
			}
		})
	}
}

func TestParseZonesFromServerBlock(t *testing.T) {
	c := caddy.NewTestController("dns", "healthdns {\n backend 10.0.0.1\n}")
	c.ServerBlockKeys = []string{"app.lan.:1053", "Other.Lan.:1053"}
	cfgs, err := parse(c)
	if err != nil {
		t.Fatal(err)
	}
	if len(cfgs) != 2 || cfgs[0].Zone != "app.lan." || cfgs[1].Zone != "other.lan." {
		t.Fatalf("zones %q %q", cfgs[0].Zone, cfgs[1].Zone)
	}
}

func TestParseSeveralBlocks(t *testing.T) {
	in := "healthdns api.lan {\n backend 10.0.0.1\n}\nhealthdns db.lan {\n backend 10.0.0.2\n check tcp 5432\n}"
	cfgs, err := parse(caddy.NewTestController("dns", in))
	if err != nil {
		t.Fatal(err)
	}
	if len(cfgs) != 2 || cfgs[1].Zone != "db.lan." || cfgs[1].Checks[0].Port != 5432 || cfgs[0].Checks[0].Kind != health.ICMP {
		t.Fatalf("%+v", cfgs)
	}
}

func TestParseErrors(t *testing.T) {
	dir := t.TempDir()
	emptyList, commentsOnly := filepath.Join(dir, "empty.backends"), filepath.Join(dir, "comments.backends")
	writeFiles(t, map[string]string{emptyList: "", commentsOnly: "# filled in by the deploy\n\n"})
	tests := []struct {
		name string
		in   string
		line int
		want string // part of the message
	}{
		{"unknown property", "healthdns app.lan {\n backend 10.0.0.1\n bogus 1\n}", 3, "unknown property 'bogus'"},
		{"bad ip", "healthdns app.lan {\n backend 10.0.0.300\n}", 2, "invalid address '10.0.0.300'"},
		{"hostname backend", "healthdns app.lan {\n backend web1.lan\n}", 2, "want an IPv4 or IPv6 literal"},
		{"scoped ip", "healthdns app.lan {\n backend fe80::1%eth0\n}", 2, "scoped"},
		{"duplicate backend", "healthdns app.lan {\n backend 10.0.0.1\n backend 10.0.0.1\n}", 3, "duplicate backend 10.0.0.1 (first on line 2)"},
		{"duplicate mapped backend", "healthdns app.lan {\n backend 10.0.0.1\n backend ::ffff:10.0.0.1\n}", 3, "duplicate backend"},
		{"weight 0", "healthdns app.lan {\n backend 10.0.0.1 weight 0\n}", 2, "invalid weight '0': want an integer from 1 to 1000"},
		{"weight 1001", "healthdns app.lan {\n backend 10.0.0.1 weight 1001\n}", 2, "invalid weight '1001'"},
		{"weight missing", "healthdns app.lan {\n backend 10.0.0.1 weight\n}", 2, "'weight' wants a value; want 'backend ADDRESS [weight W] [priority P] [drain [until TIME] [REASON...]]'"},
		{"backend option", "healthdns app.lan {\n backend 10.0.0.1 prio 2\n}", 2, "unknown backend option 'prio'"},
		{"drain until without a time", "healthdns app.lan {\n backend 10.0.0.1\n backend 10.0.0.2 drain until\n}", 3, "backend 10.0.0.2: 'drain until' wants a time, such as 'drain until 2026-12-24T18:00:00Z'"},
		{"drain bad time", "healthdns app.lan {\n backend 10.0.0.1 drain until 2026-12-24 18:00\n}", 2, "invalid drain time '2026-12-24': want an RFC 3339 time such as 2026-12-24T18:00:00Z"},
		{"drain zoneless time", "healthdns app.lan {\n backend 10.0.0.1 drain until 2026-12-24T18:00:00\n}", 2, "invalid drain time '2026-12-24T18:00:00'"},
		{"drain not last", "healthdns app.lan {\n backend 10.0.0.1 drain weight 2\n}", 2, "'weight' after drain: drain comes last"},
		{"drain reason with an escape", "healthdns app.lan {\n backend 10.0.0.1\n backend 10.0.0.2 drain \x1b[31mred\n}", 3,
			"backend 10.0.0.2: drain reason holds U+001B at byte 0: want at most 256 bytes of printable UTF-8 on one line"},
		{"drain reason of two lines", "healthdns app.lan {\n backend 10.0.0.1 drain \"disk\nforged line\"\n}", 2, "drain reason holds U+000A at byte 4"},
		{"drain reason too long", "healthdns app.lan {\n backend 10.0.0.1 drain " + strings.Repeat("x", 257) + "\n}", 2, "drain reason of 257 bytes"},
		{"drain reason of a megabyte", "healthdns app.lan {\n backend 10.0.0.1 drain until 2026-12-24T18:00:00Z " + strings.Repeat("x ", 1<<19) + "\n}", 2, "drain reason of 1048575 bytes"},
		{"drain until twice", "healthdns app.lan {\n backend 10.0.0.1 drain until 2026-12-24T18:00:00Z until 2026-12-25T18:00:00Z\n}", 2, "'until' after drain: drain comes last"},
		{"timeout = interval", "healthdns app.lan {\n backend 10.0.0.1\n interval 1s\n timeout 1s\n}", 4, "timeout 1s must be shorter than interval 1s"},
		{"timeout > default interval", "healthdns app.lan {\n backend 10.0.0.1\n timeout 2s\n}", 3, "must be shorter than interval"},
		{"zero backends", "healthdns app.lan {\n check tcp 80\n}", 1, "no backend"},
		{"empty backends_file alone", "healthdns app.lan {\n check tcp 80\n backends_file " + emptyList + "\n}", 3,
			"backends_file: " + emptyList + " lists no backend, and the block has no 'backend' line: want at least one backend in the file"},
		{"backends_file of comments alone", "healthdns app.lan {\n backends_file " + commentsOnly + "\n check tcp 80\n}", 2, commentsOnly + " lists no backend"},
		{"no block", "healthdns app.lan", 1, "no backend"},
		{"unknown policy", "healthdns app.lan {\n backend 10.0.0.1\n policy fastest\n}", 3, `unknown policy "fastest"`},
		{"unknown check", "healthdns app.lan {\n backend 10.0.0.1\n check smtp 25\n}", 3, "unknown check 'smtp 25'; want 'icmp', 'tcp PORT'"},
		{"http without port", "healthdns app.lan {\n backend 10.0.0.1\n check http\n}", 3, "want 'check http PORT [PATH] [expect CODES] [body TEXT | body_exact TEXT] [host NAME]'"},
		{"http bad port", "healthdns app.lan {\n backend 10.0.0.1\n check http 0\n}", 3, "invalid http port '0': want an integer from 1 to 65535"},
		{"http bad path", "healthdns app.lan {\n backend 10.0.0.1\n check http 80 healthz\n}", 3, "unknown http check option 'healthz'"},
		{"http path after options", "healthdns app.lan {\n backend 10.0.0.1\n check http 80 expect 200 /healthz x\n}", 3, "path '/healthz' must come right after the port"},
		{"http bad codes", "healthdns app.lan {\n backend 10.0.0.1\n check http 80 expect 200-2xx\n}", 3, "invalid status codes \"200-2xx\""},
		{"http codes out of range", "healthdns app.lan {\n backend 10.0.0.1\n check https 443 / expect 99\n}", 3, "invalid status codes \"99\""},
		{"http option without value", "healthdns app.lan {\n backend 10.0.0.1\n check http 80 / body\n}", 3, "'body' wants a value"},
		{"http option twice", "healthdns app.lan {\n backend 10.0.0.1\n check http 80 host a.lan host b.lan\n}", 3, "'host' given twice in one check"},
		{"http bad host", "healthdns app.lan {\n backend 10.0.0.1\n check http 80 host a/b\n}", 3, "invalid host 'a/b'"},
		{"body on tcp", "healthdns app.lan {\n backend 10.0.0.1\n check tcp 80 body ok\n}", 3, "options such as 'body' are for http and https checks"},
		{"body and body_exact", "healthdns app.lan {\n backend 10.0.0.1\n check http 80 body ok body_exact ok\n}", 3, "'body' and 'body_exact' in one check: give one"},
		{"body_exact and body", "healthdns app.lan {\n backend 10.0.0.1\n check http 80 body_exact ok body ok\n}", 3, "'body' and 'body_exact' in one check: give one"},
		{"body_exact with spaces around", "healthdns app.lan {\n backend 10.0.0.1\n check http 80 body_exact \" ok\"\n}", 3, `invalid body_exact " ok": want the text the whole body must be, without white space around it`},
		{"body_exact empty", "healthdns app.lan {\n backend 10.0.0.1\n check http 80 body_exact \"\"\n}", 3, `invalid body_exact ""`},
		{"body_exact without value", "healthdns app.lan {\n backend 10.0.0.1\n check http 80 body_exact\n}", 3, "'body_exact' wants a value"},
		{"body_exact on tcp", "healthdns app.lan {\n backend 10.0.0.1\n check tcp 80 body_exact ok\n}", 3, "options such as 'body_exact' are for http and https checks"},
		{"exec_concurrency 0", "healthdns app.lan {\n backend 10.0.0.1\n exec_concurrency 0\n}", 3, "invalid exec_concurrency '0': want an integer from 1 to 1000"},
		{"exec_concurrency word", "healthdns app.lan {\n backend 10.0.0.1\n exec_concurrency many\n}", 3, "invalid exec_concurrency 'many'"},
		{"exec_concurrency without value", "healthdns app.lan {\n backend 10.0.0.1\n exec_concurrency\n}", 3, "want 'exec_concurrency N'"},
		{"host on icmp", "healthdns app.lan {\n backend 10.0.0.1\n check icmp host a.lan\n}", 3, "options such as 'host' are for http and https checks"},
		{"exec relative", "healthdns app.lan {\n backend 10.0.0.1\n check exec check.sh\n}", 3, "want an absolute path"},
		{"exec missing", "healthdns app.lan {\n backend 10.0.0.1\n check exec /nonexistent/check.sh\n}", 3, "check exec /nonexistent/check.sh: stat /nonexistent/check.sh: no such file or directory"},
		{"exec without path", "healthdns app.lan {\n backend 10.0.0.1\n check exec\n}", 3, "want 'check exec PATH [ARGS...]'"},
		{"same check twice", "healthdns app.lan {\n backend 10.0.0.1\n check tcp 80\n backend 10.0.0.2\n check tcp 80\n}", 5, "duplicate check 'tcp :80' (first on line 3)"},
		{"tls_insecure without https", "healthdns app.lan {\n backend 10.0.0.1\n tls_insecure\n check tcp 80\n}", 3, "tls_insecure without an https check"},
		{"tls_ca unreadable", "healthdns app.lan {\n backend 10.0.0.1\n check https 443\n tls_ca /nonexistent/ca.pem\n}", 4, "tls_ca: open /nonexistent/ca.pem: no such file or directory"},
		{"fast_interval not below interval", "healthdns app.lan {\n backend 10.0.0.1\n fast_interval 1s\n}", 3, "fast_interval 1s must be longer than timeout 500ms and shorter than interval 1s"},
		{"fast_interval not above timeout", "healthdns app.lan {\n backend 10.0.0.1\n interval 2s\n timeout 500ms\n fast_interval 200ms\n}", 5, "fast_interval 200ms must be longer than timeout 500ms"},
		{"priority 0", "healthdns app.lan {\n backend 10.0.0.1 priority 0\n}", 2, "invalid priority '0': want an integer from 1 to 255"},
		{"priority 256", "healthdns app.lan {\n backend 10.0.0.1 priority 256\n}", 2, "invalid priority '256': want an integer from 1 to 255"},
		{"priority without value", "healthdns app.lan {\n backend 10.0.0.1 priority\n}", 2, "'priority' wants a value"},
		{"priority twice", "healthdns app.lan {\n backend 10.0.0.1 priority 1 weight 2 priority 3\n}", 2, "'priority' given twice for backend 10.0.0.1"},
		{"unknown backend option", "healthdns app.lan {\n backend 10.0.0.1 prio 1\n}", 2, "unknown backend option 'prio'; want 'backend ADDRESS [weight W] [priority P] [drain [until TIME] [REASON...]]'"},
		{"nopreempt with preempt_delay", "healthdns app.lan {\n backend 10.0.0.1\n nopreempt\n preempt_delay 2s\n}", 4, "nopreempt and preempt_delay together"},
		{"nopreempt with an argument", "healthdns app.lan {\n backend 10.0.0.1\n nopreempt yes\n}", 3, "want 'nopreempt' alone"},
		{"preempt_delay bad", "healthdns app.lan {\n backend 10.0.0.1\n preempt_delay later\n}", 3, "invalid preempt_delay 'later'"},
		{"hash_prefix without consistent_hash", "healthdns app.lan {\n backend 10.0.0.1\n hash_prefix 24 56\n}", 3, "hash_prefix without 'policy consistent_hash'"},
		{"hash_prefix v4 out of range", "healthdns app.lan {\n backend 10.0.0.1\n policy consistent_hash\n hash_prefix 33 56\n}", 4, "invalid hash_prefix IPv4 length '33': want an integer from 0 to 32"},
		{"hash_prefix v6 out of range", "healthdns app.lan {\n backend 10.0.0.1\n policy consistent_hash\n hash_prefix 24 129\n}", 4, "invalid hash_prefix IPv6 length '129'"},
		{"hash_prefix one length", "healthdns app.lan {\n backend 10.0.0.1\n policy consistent_hash\n hash_prefix 24\n}", 4, "want 'hash_prefix V4LEN V6LEN'"},
		{"fast_interval bad", "healthdns app.lan {\n backend 10.0.0.1\n fast_interval soon\n}", 3, "invalid fast_interval 'soon'"},
		{"tcp without port", "healthdns app.lan {\n backend 10.0.0.1\n check tcp\n}", 3, "want 'check tcp PORT'"},
		{"tcp port 0", "healthdns app.lan {\n backend 10.0.0.1\n check tcp 0\n}", 3, "invalid tcp port '0'"},
		{"tcp port 70000", "healthdns app.lan {\n backend 10.0.0.1\n check tcp 70000\n}", 3, "invalid tcp port"},
		{"zero interval", "healthdns app.lan {\n backend 10.0.0.1\n interval 0s\n}", 3, "invalid interval '0s': want a positive duration"},
		{"negative interval", "healthdns app.lan {\n backend 10.0.0.1\n interval -1s\n}", 3, "invalid interval '-1s'"},
		{"unit-less timeout", "healthdns app.lan {\n backend 10.0.0.1\n timeout 100\n}", 3, "invalid timeout '100'"},
		{"rise 0", "healthdns app.lan {\n backend 10.0.0.1\n rise 0\n}", 3, "invalid rise '0'"},
		{"fall -1", "healthdns app.lan {\n backend 10.0.0.1\n fall -1\n}", 3, "invalid fall '-1'"},
		{"answers 0", "healthdns app.lan {\n backend 10.0.0.1\n answers 0\n}", 3, "invalid answers '0'"},
		{"answers 65", "healthdns app.lan {\n backend 10.0.0.1\n answers 65\n}", 3, "from 1 to 64"},
		{"ttl negative", "healthdns app.lan {\n backend 10.0.0.1\n ttl -5\n}", 3, "invalid ttl '-5'"},
		{"all_down unknown", "healthdns app.lan {\n backend 10.0.0.1\n all_down nxdomain\n}", 3, "invalid all_down 'nxdomain'"},
		{"ns without address", "healthdns app.lan {\n backend 10.0.0.1\n ns ns1.app.lan\n}", 3, "want 'ns NAME ADDRESS...'"},
		{"ns bad address", "healthdns app.lan {\n backend 10.0.0.1\n ns ns1.app.lan 1.2.3\n}", 3, "invalid address '1.2.3'"},
		{"ns at the apex", "healthdns app.lan {\n backend 10.0.0.1\n ns app.lan 10.0.0.53\n}", 3, "ns name app.lan. is the zone itself"},
		{"ns outside the zone", "healthdns app.lan {\n backend 10.0.0.1\n ns ns1.other.lan 10.0.0.53\n}", 3, "ns name ns1.other.lan. is not inside zone app.lan."},
		{"ns outside one of the zones", "healthdns app.lan db.lan {\n backend 10.0.0.1\n ns ns1.app.lan 10.0.0.53\n}", 3, "ns name ns1.app.lan. is not inside zone db.lan."},
		{"ns above the zone", "healthdns app.lan {\n backend 10.0.0.1\n ns lan 10.0.0.53\n}", 3, "ns name lan. is not inside zone app.lan."},
		{"ns unspecified mapped", "healthdns app.lan {\n backend 10.0.0.1\n ns ns1.app.lan ::ffff:0.0.0.0\n}", 3, "invalid address '::ffff:0.0.0.0': unspecified"},
		{"ns broadcast", "healthdns app.lan {\n backend 10.0.0.1\n ns ns1.app.lan 10.0.0.53 255.255.255.255\n}", 3, "invalid address '255.255.255.255': broadcast"},
		{"backend unspecified", "healthdns app.lan {\n backend 0.0.0.0\n}", 2, "invalid address '0.0.0.0': unspecified"},
		{"backend unspecified v6", "healthdns app.lan {\n backend ::\n}", 2, "invalid address '::': unspecified"},
		{"backend unspecified mapped", "healthdns app.lan {\n backend ::ffff:0.0.0.0\n}", 2, "invalid address '::ffff:0.0.0.0': unspecified"},
		{"backend multicast", "healthdns app.lan {\n backend 224.0.0.1\n}", 2, "invalid address '224.0.0.1': multicast"},
		{"backend multicast mapped", "healthdns app.lan {\n backend ::ffff:224.0.0.1\n}", 2, "invalid address '::ffff:224.0.0.1': multicast"},
		{"backend multicast v6", "healthdns app.lan {\n backend ff02::1\n}", 2, "invalid address 'ff02::1': multicast"},
		{"backend broadcast", "healthdns app.lan {\n backend 255.255.255.255\n}", 2, "invalid address '255.255.255.255': broadcast"},
		{"backend broadcast mapped", "healthdns app.lan {\n backend ::ffff:255.255.255.255\n}", 2, "invalid address '::ffff:255.255.255.255': broadcast"},
		{"interval below the floor", "healthdns app.lan {\n backend 10.0.0.1\n interval 2us\n timeout 1us\n}", 3, "invalid interval '2us': want at least 10ms"},
		{"interval just below the floor", "healthdns app.lan {\n backend 10.0.0.1\n interval 9ms\n timeout 5ms\n}", 3, "invalid interval '9ms': want at least 10ms"},
		{"timeout below the floor", "healthdns app.lan {\n backend 10.0.0.1\n interval 10ms\n timeout 999us\n}", 4, "invalid timeout '999us': want at least 1ms"},
		{"default timeout above interval", "healthdns app.lan {\n backend 10.0.0.1\n interval 100ms\n}", 3,
			"timeout 500ms (the default) must be shorter than interval 100ms: set a timeout below the interval"},
		{"timeout above the default interval", "healthdns app.lan {\n backend 10.0.0.1\n timeout 2s\n}", 3,
			"timeout 2s must be shorter than interval 1s (the default): set an interval above the timeout"},
		{"zone twice", "healthdns app.lan {\n backend 10.0.0.1\n}\nhealthdns APP.lan {\n backend 10.0.0.2\n}", 4, "zone app.lan. is configured twice"},
		{"extra argument", "healthdns app.lan {\n backend 10.0.0.1\n interval 1s 2s\n}", 3, "want 'interval DURATION'"},
	}
	// Every single-valued property given twice: the second is refused, naming the first.
	for _, p := range []string{"interval 2s", "fast_interval 600ms", "exec_concurrency 8", "timeout 100ms", "tls_insecure", "nopreempt", "preempt_delay 1s", "hash_prefix 24 56", "rise 3", "fall 3",
		"policy weighted", "answers 2", "ttl 30", "all_down servfail", "ns ns1.app.lan 10.0.0.53", "fallthrough"} {
		name := strings.Fields(p)[0]
		tests = append(tests, struct {
			name string
			in   string
			line int
			want string
		}{name + " twice", "healthdns app.lan {\n backend 10.0.0.1\n " + p + "\n backend 10.0.0.2\n " + p + "\n}", 5,
			"duplicate '" + name + "' (first on line 3)"})
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parse(caddy.NewTestController("dns", tc.in))
			if err == nil {
				t.Fatal("no error")
			}
			msg := err.Error()
			if !strings.Contains(msg, tc.want) {
				t.Errorf("error %q does not contain %q", msg, tc.want)
			}
			if prefix := "Testfile:" + strconv.Itoa(tc.line) + " - "; !strings.HasPrefix(msg, prefix) {
				t.Errorf("error %q does not start with %q", msg, prefix)
			}
			// The error goes to the log: one short line, whatever the Corefile held.
			if strings.ContainsFunc(msg, unicode.IsControl) || len(msg) > 1024 {
				t.Errorf("error of %d bytes is not one short printable line: %.200q", len(msg), msg)
			}
		})
	}
}

func TestParseZonesOfTheServerBlock(t *testing.T) {
	good := []struct {
		name     string
		corefile string
		zones    []string
	}{
		{"block's zones", "app.lan:1053 db.lan:1053 {\n healthdns {\n  backend 10.0.0.1\n }\n}", []string{"app.lan.", "db.lan."}},
		{"root written out", ".:1053 {\n healthdns . {\n  backend 10.0.0.1\n }\n}", []string{"."}},
		{"root written out with the block's", "app.lan . {\n healthdns . app.lan {\n  backend 10.0.0.1\n }\n}", []string{".", "app.lan."}},
		{"named zones under root", ".:1053 {\n healthdns API.lan db.lan. {\n  backend 10.0.0.1\n }\n}", []string{"api.lan.", "db.lan."}},
		{"zone below the block's", "lan:1053 {\n healthdns app.lan {\n  backend 10.0.0.1\n }\n}", []string{"app.lan."}},
		{"zone is the block's", "dns://App.Lan:1053 {\n healthdns app.lan {\n  backend 10.0.0.1\n }\n}", []string{"app.lan."}},
		{"zone in the second key", "db.lan app.lan {\n healthdns x.app.lan {\n  backend 10.0.0.1\n }\n}", []string{"x.app.lan."}},
	}
	for _, tc := range good {
		t.Run(tc.name, func(t *testing.T) {
			cfgs, err := parseCorefile(t, tc.corefile)
			if err != nil {
				t.Fatal(err)
			}
			var zones []string
			for _, c := range cfgs {
				zones = append(zones, c.Zone)
			}
			if !slices.Equal(zones, tc.zones) {
				t.Errorf("zones %q, want %q", zones, tc.zones)
			}
		})
	}

	bad := []struct {
		name     string
		corefile string
		line     int
		want     []string
	}{
		{"root from the block", ".:1053 {\n healthdns {\n  backend 10.0.0.1\n }\n forward . 127.0.0.1\n}", 2,
			[]string{"the root zone", "every name", "healthdns app.lan {", "healthdns . {"}},
		{"root among the block's zones", "app.lan .:1053 {\n healthdns {\n  backend 10.0.0.1\n }\n}", 2, []string{"the root zone"}},
		{"root from a dns:// key", "dns://. {\n errors\n healthdns {\n  backend 10.0.0.1\n }\n}", 3, []string{"the root zone"}},
		{"zone outside the block", "app.lan:1053 {\n healthdns other.lan {\n  backend 10.0.0.1\n }\n}", 2,
			[]string{"zone other.lan. is outside this server block's zones (app.lan.)", "equal to or below"}},
		{"zone above the block's", "app.lan:1053 {\n healthdns lan {\n  backend 10.0.0.1\n }\n}", 2, []string{"zone lan. is outside"}},
		{"explicit root in a named block", "app.lan:1053 {\n healthdns . {\n  backend 10.0.0.1\n }\n}", 2, []string{"zone . is outside"}},
		{"second pool outside", "app.lan db.lan {\n healthdns app.lan {\n  backend 10.0.0.1\n }\n healthdns x.lan {\n  backend 10.0.0.2\n }\n}", 5,
			[]string{"zone x.lan. is outside this server block's zones (app.lan., db.lan.)"}},
		{"CIDR", ".:1053 {\n healthdns 10.0.0.0/24 {\n  backend 10.0.0.1\n }\n}", 2, []string{"invalid zone '10.0.0.0/24'", "address range", "want a domain name"}},
		{"port", ".:1053 {\n healthdns app.lan:53 {\n  backend 10.0.0.1\n }\n}", 2, []string{"invalid zone 'app.lan:53'", "port", "server block"}},
		{"scheme", ".:1053 {\n healthdns dns://app.lan {\n  backend 10.0.0.1\n }\n}", 2, []string{"invalid zone 'dns://app.lan'", "scheme"}},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parseCorefile(t, tc.corefile)
			if err == nil {
				t.Fatal("no error")
			}
			msg := err.Error()
			if prefix := "Corefile:" + strconv.Itoa(tc.line) + " - "; !strings.HasPrefix(msg, prefix) {
				t.Errorf("error %q does not start with %q", msg, prefix)
			}
			for _, w := range tc.want {
				if !strings.Contains(msg, w) {
					t.Errorf("error %q does not contain %q", msg, w)
				}
			}
		})
	}
}

// An empty backends file is a list to come when the block has backends of its own.
func TestParseEmptyBackendsFileBesideBackendLines(t *testing.T) {
	list := filepath.Join(t.TempDir(), "empty.backends")
	writeFiles(t, map[string]string{list: ""})
	cfgs, err := parse(caddy.NewTestController("dns", "healthdns app.lan {\n backend 10.0.0.1\n backends_file "+list+"\n check tcp 80\n}"))
	if err != nil {
		t.Fatal(err)
	}
	if got := cfgs[0]; len(got.Backends) != 1 || len(got.Source.Initial) != 0 {
		t.Errorf("backends %v, from the file %v: want the Corefile's one and none from the file", got.Backends, got.Source.Initial)
	}
}

// TestParseWarnings: what setup accepts but an operator should hear about is logged once.
func TestParseWarnings(t *testing.T) {
	dir := t.TempDir()
	weighted, plain := filepath.Join(dir, "weighted.backends"), filepath.Join(dir, "plain.backends")
	writeFiles(t, map[string]string{weighted: "10.0.0.8\n10.0.0.7 weight 3\n", plain: "10.0.0.7\n10.0.0.8\n"})
	const oneGroup = "nopreempt does nothing for app.lan.: each address family has one priority group, so no group takes over or back; give the standby backends a lower 'priority'"
	tests := []struct {
		name  string
		block string
		want  string // "" for no warning
	}{
		{"weight in the backends file", " backends_file " + weighted + "\n policy round_robin", "Corefile:3 - weight is ignored unless 'policy weighted' or 'policy consistent_hash' (the policy of app.lan. is round_robin), and " + weighted + " gives 10.0.0.7 weight 3"},
		{"weighted backends file", " backends_file " + weighted + "\n policy weighted", ""},
		{"nopreempt, one group", " backend 10.0.0.1\n backend 10.0.0.2\n nopreempt", "Corefile:5 - " + oneGroup},
		{"preempt_delay, equal priorities", " backend 10.0.0.1 priority 101\n backend 10.0.0.2 priority 101\n preempt_delay 30s",
			"Corefile:5 - preempt_delay does nothing for app.lan.: each address family has one priority group"},
		{"nopreempt, one group a family", " backend 10.0.0.1\n backend fd00::1 priority 200\n nopreempt", "Corefile:5 - " + oneGroup},
		{"nopreempt, two groups", " backend 10.0.0.1 priority 200\n backend 10.0.0.2\n nopreempt", ""},
		{"nopreempt, two groups in one family", " backend 10.0.0.1 priority 200\n backend 10.0.0.2\n backend fd00::1\n nopreempt", ""},
		{"nopreempt, a live list", " backends_file " + plain + "\n nopreempt", ""},
		{"round_robin", " backend 10.0.0.1\n backend 10.0.0.2 weight 2\n backend 10.0.0.3 weight 3\n policy round_robin", "Corefile:4 - weight is ignored unless 'policy weighted' or 'policy consistent_hash' (the policy of app.lan. is round_robin)"},
		{"default policy", " backend 10.0.0.1 weight 5", "Corefile:3 - weight is ignored unless 'policy weighted' or 'policy consistent_hash' (the policy of app.lan. is random)"},
		{"weighted", " backend 10.0.0.1 weight 5\n policy weighted", ""},
		{"no weight", " backend 10.0.0.1\n policy round_robin", ""},
		{"tls_insecure", " backend 10.0.0.1\n check https 443\n tls_insecure", "Corefile:5 - tls_insecure: the https checks of app.lan. do not verify certificates; any server on the port passes"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			logged := captureLog(t)
			if _, err := parseCorefile(t, ".:1053 {\n healthdns app.lan {\n"+tc.block+"\n }\n}"); err != nil {
				t.Fatal(err)
			}
			out := logged.String()
			switch {
			case tc.want == "" && out != "":
				t.Errorf("logged %q, want nothing", out)
			case tc.want != "" && (!strings.Contains(out, "[WARNING] plugin/healthdns: "+tc.want) || strings.Count(out, "\n") != 1):
				t.Errorf("logged %q, want one warning %q", out, tc.want)
			}
		})
	}
}
