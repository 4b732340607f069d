package healthdns

import (
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coredns/caddy"

	"github.com/healthdns/healthdns/health"
	"github.com/healthdns/healthdns/pool"
)

// TestParsePushCheck: 'check push TTL [token FILE]' beside a probed check, its token the
// zone's report token; and every way the line, or a block that could never hear a report, is
// refused at its line.
func TestParsePushCheck(t *testing.T) {
	dir := t.TempDir()
	token := filepath.Join(dir, "report.token")
	if err := os.WriteFile(token, []byte("r3port-r3port-r3port\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	in := "healthdns app.lan {\n backend 10.0.0.1\n check tcp 5432\n check push 30s token " + token + "\n fall 1\n status 127.0.0.1:8053\n}"
	cfgs, err := parse(caddy.NewTestController("dns", in))
	if err != nil {
		t.Fatal(err)
	}
	c := cfgs[0]
	push := health.Check{Kind: health.Push, TTL: 30 * time.Second}
	if len(c.Checks) != 2 || c.Checks[1] != push || c.ReportToken != "r3port-r3port-r3port" || c.Spec.Fall != 1 {
		t.Fatalf("checks %+v, report token %q, fall %d", c.Checks, c.ReportToken, c.Spec.Fall)
	}
	if c.Checks[1].String() != "push 30s" {
		t.Errorf("the push check is named %q", c.Checks[1])
	}
	if spec := c.Spec.For(push); spec.Interval != 30*time.Second || spec.Timeout != 0 {
		t.Errorf("the push check's spec %+v: want the TTL as its interval, no timeout", spec)
	}

	loose := filepath.Join(dir, "loose.token")
	if err := os.WriteFile(loose, []byte("r3port-r3port-r3port\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	withToken := " status 127.0.0.1:8053 token " + token + "\n"
	for _, tc := range []struct {
		name, in string
		line     int
		want     string
	}{
		{"no TTL", "healthdns app.lan {\n backend 10.0.0.1\n check push\n" + withToken + "}", 3, "want 'check push TTL [token FILE]'"},
		{"TTL too short", "healthdns app.lan {\n backend 10.0.0.1\n check push 500ms\n" + withToken + "}", 3, "invalid push TTL '500ms': want a duration of at least 1s"},
		{"TTL not a duration", "healthdns app.lan {\n backend 10.0.0.1\n check push often\n" + withToken + "}", 3, "invalid push TTL 'often'"},
		{"an unknown option", "healthdns app.lan {\n backend 10.0.0.1\n check push 30s secret " + token + "\n" + withToken + "}", 3, "unknown push check option 'secret'"},
		{"token without a file", "healthdns app.lan {\n backend 10.0.0.1\n check push 30s token\n" + withToken + "}", 3, "want 'check push TTL [token FILE]'"},
		{"a token others can read", "healthdns app.lan {\n backend 10.0.0.1\n check push 30s token " + loose + "\n" + withToken + "}", 3, "check push token: " + loose + ": mode 0644"},
		{"two push checks", "healthdns app.lan {\n backend 10.0.0.1\n check push 30s\n check push 60s\n" + withToken + "}", 4, "a second push check (the first on line 3)"},
		{"no status listener", "healthdns app.lan {\n backend 10.0.0.1\n check push 30s token " + token + "\n}", 3, "check push takes its reports on the status listener, and the block has none"},
		{"no token", "healthdns app.lan {\n backend 10.0.0.1\n check push 30s\n status 127.0.0.1:8053\n}", 3, "check push takes reports only with a token"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parse(caddy.NewTestController("dns", tc.in))
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.HasPrefix(err.Error(), "Testfile:"+strconv.Itoa(tc.line)+" - ") {
				t.Errorf("error %v, want %q at line %d", err, tc.want, tc.line)
			}
		})
	}
}

// TestChangeLinesPush: a push check's lines say what the node reported.
func TestChangeLinesPush(t *testing.T) {
	target := health.Target{Addr: netip.MustParseAddr("10.0.0.7"), Spec: health.Spec{Check: health.Check{Kind: health.Push, TTL: 30 * time.Second}}}
	owners := []string{pool.Owner("dns://:1053", "db.lan.")}
	for _, tc := range []struct {
		c    health.Change
		want string
	}{
		{health.Change{Up: true, First: true, Streak: 1, Need: 1, Owners: owners, Output: "primary, lag 0s"}, "backend 10.0.0.7 (db.lan.): up (first verdict, push 30s): primary, lag 0s"},
		{health.Change{First: true, Err: &health.PushError{Missed: true, TTL: 30 * time.Second}, Streak: 1, Need: 1}, "backend 10.0.0.7: down (first verdict): push: no report within 30s"},
		{health.Change{Err: &health.PushError{Output: "replica lag 93s"}, Streak: 1, Need: 1}, "backend 10.0.0.7: down: push: reported fail: replica lag 93s (1/1)"},
		{health.Change{Up: true, Streak: 2, Need: 2, Output: "caught up"}, "backend 10.0.0.7: up: push 30s passed (2/2): caught up"},
	} {
		if got := changeLine(target, tc.c); got != tc.want {
			t.Errorf("changeLine(%+v)\n got %s\nwant %s", tc.c, got, tc.want)
		}
	}
}
