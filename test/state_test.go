package test

import (
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/healthdns/healthdns/test/harness"
)

// TestStateAcrossRestart: two servers without etcd, nopreempt, a primary and a standby. The
// primary fails and recovers: both serve the standby. One server is reloaded, then killed and
// started again: both still serve the standby, and a drain set through its status API holds.
// A state file that is corrupt, too old or of another configuration is ignored with a log line,
// and the server starts as without one, on the primary.
func TestStateAcrossRestart(t *testing.T) {
	t.Parallel()
	const primary, standby, maintained, other = "127.0.18.1", "127.0.18.2", "127.0.18.11", "127.0.18.12"
	port, bs := harness.StartBackends(t, primary, standby, maintained, other)
	statusAddr := "127.0.0.1:" + strconv.Itoa(harness.FreePort(t))
	const token = "state-s3cret-0123456789"
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// Server 2 has the status listener, to drain through.
	conf := func(stateFile string, standbyPriority int, extra ...string) string {
		check := []string{"check tcp " + strconv.Itoa(port), "interval 100ms", "timeout 50ms", "state " + stateFile}
		maint := slices.Clone(check)
		if strings.HasSuffix(filepath.Dir(stateFile), "2") {
			maint = append(maint, "status "+statusAddr+" token "+tokenFile)
		}
		return ".:{{PORT}} {\n bind 127.0.0.1\n prometheus {{METRICS}}\n" +
			harness.Pool("ha.lan", nil, append(append([]string{"backend " + primary + " priority 200",
				"backend " + standby + " priority " + strconv.Itoa(standbyPriority), "nopreempt"}, check...), extra...)...) +
			harness.Pool("maint.lan", []string{maintained, other}, append(maint, "answers 2")...) +
			"}\n"
	}
	dir := t.TempDir()
	for _, d := range []string{"dns1", "dns2"} {
		if err := os.Mkdir(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	state1, state2 := filepath.Join(dir, "dns1", "state.json"), filepath.Join(dir, "dns2", "state.json")
	s1 := harness.Start(t, conf(state1, 100))
	s2 := harness.Start(t, conf(state2, 100))
	servers := []*harness.Server{s1, s2}
	serves := func(s *harness.Server, zone string, ips ...string) bool {
		return harness.SameSet(s.Addrs(t, "udp", zone, dns.TypeA), ips...)
	}
	allServe := func(ip string) func() bool {
		return func() bool { return serves(s1, "ha.lan.", ip) && serves(s2, "ha.lan.", ip) }
	}
	primaryUp := func() bool {
		for _, s := range servers {
			if v, _ := s.Scrape(t).Value("coredns_healthdns_backend_up", map[string]string{"zone": "ha.lan", "backend": primary}); v != 1 {
				return false
			}
		}
		return true
	}
	// toStandby fails the primary over to the standby on both servers, and brings it back.
	toStandby := func(what string) {
		t.Helper()
		bs[primary].Stop()
		harness.Eventually(t, 10*time.Second, allServe(standby), "both servers on the standby, ", what)
		bs[primary].Start()
		harness.Eventually(t, 10*time.Second, primaryUp, "the primary up again on both servers, ", what)
		harness.Eventually(t, 10*time.Second, func() bool { return savedGroup(t, state2, "ha.lan.") == 100 }, "server 2's state file to say the standby serves, ", what)
	}
	stillStandby := func(what string) {
		t.Helper()
		for range 10 {
			if !allServe(standby)() {
				t.Fatalf("%s: server 1 answers %v, server 2 %v; want both on the standby (nopreempt)", what,
					s1.Addrs(t, "udp", "ha.lan.", dns.TypeA), s2.Addrs(t, "udp", "ha.lan.", dns.TypeA))
			}
			time.Sleep(50 * time.Millisecond)
		}
	}

	harness.Eventually(t, 10*time.Second, allServe(primary), "both servers on the primary at start")
	toStandby("the primary failed and recovered")
	stillStandby("the primary recovered")

	api := &apiClient{base: "http://" + statusAddr, token: token, http: &http.Client{Timeout: 5 * time.Second}}
	until := time.Now().Add(time.Hour).UTC().Truncate(time.Second).Format(time.RFC3339)
	if code, body, _ := api.post(t, "/api/v1/drain", token, `{"zone":"maint.lan.","backend":"`+maintained+`","reason":"disk swap","until":"`+until+`"}`); code != http.StatusOK {
		t.Fatalf("drain: %d %s", code, body)
	}
	harness.Eventually(t, 5*time.Second, func() bool { return serves(s2, "maint.lan.", other) }, "the drained backend out of server 2's answers")

	// A reload keeps the serving group, and the state file agrees.
	if err := s2.Reload(t, conf(state2, 100, "ttl 3")); err != nil {
		t.Fatal(err)
	}
	stillStandby("after server 2's reload")
	harness.Eventually(t, 5*time.Second, func() bool { return savedGroup(t, state2, "ha.lan.") == 100 }, "the state file to say the standby serves after the reload")

	// A crash and a restart: the state file was written as things changed, not at exit.
	s2.Restart(t, syscall.SIGKILL, "", nil)
	stillStandby("after server 2's restart")
	if !strings.Contains(s2.Output(), "zone ha.lan.: resuming from state file "+state2) {
		t.Errorf("no line of server 2 says it resumed its state:\n%s", s2.Output())
	}
	if !serves(s2, "maint.lan.", other) {
		t.Errorf("after the restart server 2 answers %v for maint.lan, want %s alone: the API's drain was forgotten", s2.Addrs(t, "udp", "maint.lan.", dns.TypeA), other)
	}
	if state, by := api.drainedBy(t, "maint.lan.", maintained); state != "drained" || by != "api" {
		t.Errorf("/status.json after the restart: %s %s drained_by %q, want drained by api", maintained, state, by)
	}

	// Ignored states: each restart starts afresh, on the healthy primary, and says why.
	for _, tc := range []struct {
		name, line string
		tmpl       string
		spoil      func()
	}{
		{"corrupt", "state file " + state2 + ": ignored, starting without it: not a state file", "", func() {
			if err := os.WriteFile(state2, []byte(`{"version": 1, "zones": {"dns://:5`), 0o644); err != nil {
				t.Fatal(err)
			}
		}},
		{"too old", "zone ha.lan.: state file " + state2 + ": ignored, starting afresh: saved 2h", "", func() { ageState(t, state2, 2*time.Hour) }},
		{"another configuration", "zone ha.lan.: state file " + state2 + ": ignored, starting afresh: it was saved for another configuration of the zone", conf(state2, 150), nil},
	} {
		toStandby("before the " + tc.name + " state")
		s2.Restart(t, syscall.SIGTERM, tc.tmpl, tc.spoil)
		harness.Eventually(t, 5*time.Second, func() bool { return serves(s2, "ha.lan.", primary) }, "server 2 on the primary, its ", tc.name, " state ignored")
		if !strings.Contains(s2.Output(), tc.line) {
			t.Errorf("%s state: no line %q in:\n%s", tc.name, tc.line, s2.Output())
		}
		if !serves(s1, "ha.lan.", standby) {
			t.Errorf("server 1 left the standby while server 2 restarted: %v", s1.Addrs(t, "udp", "ha.lan.", dns.TypeA))
		}
		// Back to one configuration, and one group, for the next case.
		s2.Restart(t, syscall.SIGTERM, conf(state2, 100), nil)
	}
}

// stateDoc is what a test reads of a state file: each zone's serving groups and when it was
// saved, by the server and zone that keep it.
type stateDoc struct {
	Zones map[string]map[string]json.RawMessage `json:"zones"`
}

// savedGroup returns the IPv4 serving group that the state file at path keeps for zone, 0 for
// none or no file.
func savedGroup(t *testing.T, path, zone string) int {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	var doc stateDoc
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatalf("state file %s: %v", path, err)
	}
	for key, z := range doc.Zones {
		if strings.HasSuffix(key, " "+zone) {
			var serving map[string]int
			json.Unmarshal(z["serving"], &serving)
			return serving["ipv4"]
		}
	}
	return 0
}

// ageState moves the saved time of every zone of the state file at path back by d.
func ageState(t *testing.T, path string, d time.Duration) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var doc stateDoc
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	for _, z := range doc.Zones {
		var saved time.Time
		if err := json.Unmarshal(z["saved"], &saved); err != nil {
			t.Fatal(err)
		}
		z["saved"], _ = json.Marshal(saved.Add(-d))
	}
	raw, _ := json.Marshal(map[string]any{"version": 1, "zones": doc.Zones})
	if err := os.WriteFile(path, raw, 0o644); err != nil {
		t.Fatal(err)
	}
}
