package healthdns

import (
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coredns/caddy"

	"github.com/healthdns/healthdns/pool"
)

// TestParseState: 'state FILE [max_age DURATION]' gives every zone of its block the file, with
// an hour's max age unless it says; a file whose directory is missing fails the Corefile.
func TestParseState(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "state.json")
	good := []struct {
		in   string
		want pool.State
	}{
		{"healthdns app.lan db.lan {\n backend 10.0.0.1\n state " + path + "\n}", pool.State{Path: path, MaxAge: time.Hour}},
		{"healthdns app.lan {\n backend 10.0.0.1\n state " + dir + "/./state.json max_age 10m\n}", pool.State{Path: path, MaxAge: 10 * time.Minute}},
		{"healthdns app.lan {\n backend 10.0.0.1\n}", pool.State{}},
	}
	for _, tc := range good {
		cfgs, err := parse(caddy.NewTestController("dns", tc.in))
		if err != nil {
			t.Fatalf("%q: %v", tc.in, err)
		}
		for _, c := range cfgs {
			if c.State != tc.want {
				t.Errorf("%q: zone %s has state %+v, want %+v", tc.in, c.Zone, c.State, tc.want)
			}
		}
	}
	bad := []struct{ in, want string }{
		{"state", "want 'state FILE [max_age DURATION]'"},
		{"state " + path + " 10m", "want 'state FILE [max_age DURATION]'"},
		{"state " + path + " max_age", "want 'state FILE [max_age DURATION]'"},
		{"state " + path + " max_age 1s", "invalid state max_age '1s': want at least 10s"},
		{"state " + path + " max_age soon", "invalid state max_age 'soon'"},
		{"state /nonexistent/healthdns/state.json", "state /nonexistent/healthdns/state.json: its directory /nonexistent/healthdns does not exist"},
		{"state " + path + "\n state " + path, "duplicate 'state' (first on line 3)"},
	}
	for _, tc := range bad {
		_, err := parse(caddy.NewTestController("dns", "healthdns app.lan {\n backend 10.0.0.1\n "+tc.in+"\n}"))
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.HasPrefix(err.Error(), "Testfile:"+strconv.Itoa(3+strings.Count(tc.in, "\n"))+" - ") {
			t.Errorf("%q: error %v, want %q", tc.in, err, tc.want)
		}
	}
}
