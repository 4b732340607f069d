package test

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/healthdns/healthdns/test/harness"
)

// reporter posts a pass for each of its backends every period, as a node's timer would, with
// the zone's report token, until the test ends.
type reporter struct {
	api  *apiClient
	mu   sync.Mutex
	pass map[string]bool
	done chan struct{}
	wg   sync.WaitGroup
}

func startReporter(t *testing.T, api *apiClient, token string, period time.Duration, backends ...string) *reporter {
	r := &reporter{api: api, pass: map[string]bool{}, done: make(chan struct{})}
	for _, b := range backends {
		r.pass[b] = true
	}
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		tick := time.NewTicker(period)
		defer tick.Stop()
		for {
			r.mu.Lock()
			var now []string
			for b := range r.pass {
				now = append(now, b)
			}
			r.mu.Unlock()
			for _, b := range now {
				body := `{"zone":"push.lan.","backend":"` + b + `","result":"pass","output":"port open"}`
				req, _ := http.NewRequest("POST", api.base+"/api/v1/report", strings.NewReader(body))
				req.Header.Set("Authorization", "Bearer "+token)
				if resp, err := api.http.Do(req); err == nil {
					resp.Body.Close()
				}
			}
			select {
			case <-r.done:
				return
			case <-tick.C:
			}
		}
	}()
	t.Cleanup(func() { close(r.done); r.wg.Wait() })
	return r
}

// silence stops reporting for backend b.
func (r *reporter) silence(b string) {
	r.mu.Lock()
	delete(r.pass, b)
	r.mu.Unlock()
}

// pushCheckOf reads from /status.json the push check of backend ip of push.lan.
func pushCheckOf(t *testing.T, api *apiClient, ip string) (state string, since time.Time, failure string) {
	t.Helper()
	var doc struct {
		Pools []struct {
			Zone     string `json:"zone"`
			Backends []struct {
				Address string `json:"address"`
				Checks  []struct {
					Check       string     `json:"check"`
					State       string     `json:"state"`
					Since       *time.Time `json:"since"`
					LastFailure *struct {
						Error string `json:"error"`
					} `json:"last_failure"`
				} `json:"checks"`
			} `json:"backends"`
		} `json:"pools"`
	}
	api.status(t, &doc)
	for _, p := range doc.Pools {
		for _, b := range p.Backends {
			if p.Zone != "push.lan." || b.Address != ip {
				continue
			}
			for _, c := range b.Checks {
				if strings.HasPrefix(c.Check, "push ") {
					if c.Since != nil {
						since = *c.Since
					}
					if c.LastFailure != nil {
						failure = c.LastFailure.Error
					}
					return c.State, since, failure
				}
			}
		}
	}
	t.Fatalf("no push check of %s in /status.json", ip)
	return
}

// TestPushCheck drives 'check push' with the real binary, in a pool with a TCP check beside it,
// two priority groups and a drained backend: reports keep the backends up, a fail report takes
// one out at once (fall 1), a TTL without a report takes one out and the zone falls to its
// lower group, a report of a backend the zone does not list is refused and counted, and the
// push checks' state survives a reload.
func TestPushCheck(t *testing.T) {
	t.Parallel()
	const failing, silent, standby, drained, unlisted = "127.0.16.1", "127.0.16.2", "127.0.16.3", "127.0.16.4", "127.0.16.9"
	port, _ := harness.StartBackends(t, failing, silent, standby, drained)
	statusAddr := "127.0.0.1:" + strconv.Itoa(harness.FreePort(t))
	const token, reportToken = "push-s3cret-0123456789", "push-r3port-0123456789"
	dir := t.TempDir()
	tokenFile, reportFile := filepath.Join(dir, "status.token"), filepath.Join(dir, "report.token")
	for file, tok := range map[string]string{tokenFile: token, reportFile: reportToken} {
		if err := os.WriteFile(file, []byte(tok+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	const ttl = 2 * time.Second
	conf := func(comment string) string {
		return ".:{{PORT}} {\n bind 127.0.0.1\n prometheus {{METRICS}}\n # " + comment + "\n" +
			harness.Pool("push.lan", nil,
				"backend "+failing+" priority 200", "backend "+silent+" priority 200", "backend "+standby,
				"backend "+drained+" priority 200 drain",
				"check tcp "+strconv.Itoa(port), "check push "+ttl.String()+" token "+reportFile,
				"interval 200ms", "timeout 100ms", "rise 1", "fall 1", "answers 4",
				"status "+statusAddr+" token "+tokenFile) + "}\n"
	}
	s := harness.Start(t, conf("first"))
	api := &apiClient{base: "http://" + statusAddr, token: token, http: &http.Client{Timeout: 5 * time.Second}}
	serves := func(ips ...string) func() bool {
		return func() bool { return harness.SameSet(s.Addrs(t, "udp", "push.lan.", dns.TypeA), ips...) }
	}
	logged := func(text string) bool { return strings.Contains(s.Output(), text) }

	if strings.Contains(s.Output(), "first probes still running") {
		t.Errorf("the start waited for the push checks' first reports:\n%s", s.Output())
	}
	if got := s.Addrs(t, "udp", "push.lan.", dns.TypeA); len(got) != 0 {
		t.Fatalf("answers %v before any report; want none: no backend has passed its push check", got)
	}
	rep := startReporter(t, api, reportToken, 200*time.Millisecond, failing, silent, standby, drained)
	harness.Eventually(t, 10*time.Second, serves(failing, silent), "the reported backends of group 200, the drained one aside")

	// A report of a backend the zone does not list: refused, counted, and nothing changes.
	code, body, _ := api.post(t, "/api/v1/report", reportToken, `{"zone":"push.lan.","backend":"`+unlisted+`","result":"pass"}`)
	if code != http.StatusNotFound || !strings.Contains(body, "zone push.lan. has no backend "+unlisted) {
		t.Errorf("a report of an unlisted backend: %d %s, want 404", code, body)
	}
	refusedCount := func() float64 {
		v, _ := s.Scrape(t).Value("coredns_healthdns_reports_refused_total", map[string]string{"zone": "push.lan.", "reason": "unlisted"})
		return v
	}
	if n := refusedCount(); n != 1 {
		t.Errorf("coredns_healthdns_reports_refused_total{reason=unlisted} = %v, want 1", n)
	}

	// A fail report, with fall 1: out at once, with the node's output in the log.
	rep.silence(failing)
	failedAt := time.Now()
	code, body, _ = api.post(t, "/api/v1/report", reportToken, `{"zone":"push.lan.","backend":"`+failing+`","result":"fail","output":"pg_isready: no response"}`)
	if code != http.StatusOK || !strings.Contains(body, `"state":"down"`) {
		t.Fatalf("a fail report: %d %s, want 200 and the check down", code, body)
	}
	harness.Eventually(t, 5*time.Second, serves(silent), "the backend that reported fail to leave the answers")
	t.Logf("out of the answers %s after its fail report", time.Since(failedAt).Round(time.Millisecond))
	if line := "backend " + failing + " (push.lan.): down: push: reported fail: pg_isready: no response (1/1)"; !harness.Poll(5*time.Second, 10*time.Millisecond, func() bool { return logged(line) }) {
		t.Errorf("no log line %q", line)
	}

	// No report within the TTL: out, and the zone falls to its lower group.
	rep.silence(silent)
	silencedAt := time.Now()
	harness.Eventually(t, ttl+10*time.Second, serves(standby), "the silent backend to leave the answers, and the standby group to serve")
	t.Logf("out of the answers %s after its last report (TTL %s, reports every 200ms)", time.Since(silencedAt).Round(time.Millisecond), ttl)
	if line := "backend " + silent + " (push.lan.): down: push: no report within " + ttl.String(); !harness.Poll(5*time.Second, 10*time.Millisecond, func() bool { return logged(line) }) {
		t.Errorf("no log line %q", line)
	}
	if st, _, failure := pushCheckOf(t, api, silent); st != "down" || !strings.HasPrefix(failure, "push: no report within 2s (the last at ") {
		t.Errorf("/status.json: the silent backend's push check %s, last failure %q", st, failure)
	}

	// The push checks' state is carried over a reload: the same monitors, the same since.
	_, failingSince, _ := pushCheckOf(t, api, failing)
	_, standbySince, _ := pushCheckOf(t, api, standby)
	if err := s.Reload(t, conf("reloaded")); err != nil {
		t.Fatal(err)
	}
	if st, since, _ := pushCheckOf(t, api, failing); st != "down" || !since.Equal(failingSince) {
		t.Errorf("after the reload: the failed backend's push check %s since %v, want down since %v", st, since, failingSince)
	}
	if st, since, _ := pushCheckOf(t, api, standby); st != "up" || !since.Equal(standbySince) {
		t.Errorf("after the reload: the reported standby's push check %s since %v, want up since %v", st, since, standbySince)
	}
	if !serves(standby)() {
		t.Errorf("after the reload: answers %v, want the standby alone", s.Addrs(t, "udp", "push.lan.", dns.TypeA))
	}

	// A pass brings the failed backend back, and group 200 serves again: sent as a node's timer
	// sends it, with healthdnsctl and the listener's token.
	r := ctl(t, []string{"HEALTHDNS_ADDR=" + statusAddr, "HEALTHDNS_TOKEN_FILE=" + tokenFile},
		"report", "push.lan", failing, "pass", "--output", "accepting connections")
	if r.code != 0 || !strings.Contains(r.stdout+r.stderr, "up") {
		t.Fatalf("healthdnsctl report pass with the listener's token: exit %d\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
	}
	harness.Eventually(t, 5*time.Second, serves(failing), "the backend that reported pass back, its group serving again")
	if line := fmt.Sprintf("backend %s (push.lan.): up: push %s passed (1/1): accepting connections", failing, ttl); !harness.Poll(5*time.Second, 10*time.Millisecond, func() bool { return logged(line) }) {
		t.Errorf("no log line %q", line)
	}
	if n := refusedCount(); n != 1 {
		t.Errorf("coredns_healthdns_reports_refused_total{reason=unlisted} = %v at the end, want 1", n)
	}
	if !s.Alive() {
		t.Fatal("coredns exited")
	}
}
