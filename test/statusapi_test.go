package test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptrace"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/healthdns/healthdns/test/harness"
)

// apiClient posts writes to a status listener, and remembers the address it posted from, which
// the server's log must name.
type apiClient struct {
	base, token string
	http        *http.Client
}

// post sends body to path and returns the status code, the body, and the caller's address.
func (c *apiClient) post(t *testing.T, path, token, body string) (int, string, string) {
	t.Helper()
	var caller string
	trace := &httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) { caller = i.Conn.LocalAddr().String() }}
	req, err := http.NewRequestWithContext(httptrace.WithClientTrace(context.Background(), trace), "POST", c.base+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		t.Fatalf("POST %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), caller
}

// status reads /status.json, with the token, into doc.
func (c *apiClient) status(t *testing.T, doc any) {
	t.Helper()
	req, _ := http.NewRequest("GET", c.base+"/status.json", nil)
	req.Header.Set("Authorization", "Bearer "+c.token)
	resp, err := c.http.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(doc); err != nil {
		t.Fatalf("/status.json: %v", err)
	}
}

// drainedBy reads from /status.json the state and drained_by of backend ip of zone.
func (c *apiClient) drainedBy(t *testing.T, zone, ip string) (state, by string) {
	t.Helper()
	var doc struct {
		Pools []struct {
			Zone     string `json:"zone"`
			Backends []struct {
				Address   string `json:"address"`
				State     string `json:"state"`
				DrainedBy string `json:"drained_by"`
			} `json:"backends"`
		} `json:"pools"`
	}
	c.status(t, &doc)
	for _, p := range doc.Pools {
		for _, b := range p.Backends {
			if p.Zone == zone && b.Address == ip {
				return b.State, b.DrainedBy
			}
		}
	}
	return "", ""
}

// TestStatusAPI drives the status listener's writes against the real binary: a drain takes a
// live backend out of the answers at once and survives a Corefile reload, an undrain brings it
// back, and under nopreempt a fail-back moves the zone back to its returned primary; the log
// names the caller's address for each, and a write without the token changes nothing.
func TestStatusAPI(t *testing.T) {
	t.Parallel()
	const drained, live, primary, standby = "127.0.1.210", "127.0.1.211", "127.0.1.212", "127.0.1.213"
	port, backends := harness.StartBackends(t, drained, live, primary, standby)
	statusAddr := "127.0.0.1:" + strconv.Itoa(harness.FreePort(t))
	const token = "api-s3cret-0123456789"
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	status := "status " + statusAddr + " token " + tokenFile
	conf := func(comment string) string {
		return ".:{{PORT}} {\n bind 127.0.0.1\n # " + comment + "\n" +
			harness.TCPPool("write.lan", port, "200ms", "100ms", []string{drained, live}, "answers 2", status) +
			harness.Pool("fb.lan", nil, "backend "+primary+" priority 200", "backend "+standby,
				"check tcp "+strconv.Itoa(port), "interval 100ms", "timeout 50ms", "nopreempt", "answers 2", status) + "}\n"
	}
	s := harness.Start(t, conf("first"))
	api := &apiClient{base: "http://" + statusAddr, token: token, http: &http.Client{Timeout: 5 * time.Second}}
	serves := func(zone string, ips ...string) func() bool {
		return func() bool { return harness.SameSet(s.Addrs(t, "udp", zone, dns.TypeA), ips...) }
	}
	// The log comes through a pipe the harness reads on its own goroutine: a line written before
	// the API answered may arrive after the answer, so it is waited for.
	logged := func(text string) bool { return strings.Contains(s.Output(), text) }
	harness.Eventually(t, 5*time.Second, serves("write.lan.", drained, live), "both backends of write.lan answered")

	// Without the token: refused, and nothing changes.
	if code, body, _ := api.post(t, "/api/v1/drain", "", `{"zone":"write.lan.","backend":"`+drained+`"}`); code != http.StatusUnauthorized {
		t.Errorf("a drain without the token: %d %s, want 401", code, body)
	}
	if !serves("write.lan.", drained, live)() {
		t.Fatalf("a refused drain changed the answers: %v", s.Addrs(t, "udp", "write.lan.", dns.TypeA))
	}

	until := time.Now().Add(time.Hour).UTC().Truncate(time.Second).Format(time.RFC3339)
	code, body, caller := api.post(t, "/api/v1/drain", token, `{"zone":"write.lan.","backend":"`+drained+`","reason":"kernel upgrade","until":"`+until+`"}`)
	if code != http.StatusOK || !strings.Contains(body, `"ok":true`) {
		t.Fatalf("drain: %d %s", code, body)
	}
	harness.Eventually(t, 5*time.Second, serves("write.lan.", live), "the drained backend to leave the answers")
	if line := "zone write.lan.: backend " + drained + ": drained until " + until + " by " + caller + " via the status API (kernel upgrade)"; !harness.Poll(5*time.Second, 10*time.Millisecond, func() bool { return logged(line) }) {
		t.Errorf("no log line %q", line)
	}
	if st, by := api.drainedBy(t, "write.lan.", drained); st != "drained" || by != "api" {
		t.Errorf("/status.json: %s drained_by %q, want drained by api", st, by)
	}

	if err := s.Reload(t, conf("reloaded")); err != nil {
		t.Fatal(err)
	}
	if !serves("write.lan.", live)() {
		t.Errorf("after the reload: %v, want %s alone: the drain did not survive", s.Addrs(t, "udp", "write.lan.", dns.TypeA), live)
	}
	if st, by := api.drainedBy(t, "write.lan.", drained); st != "drained" || by != "api" {
		t.Errorf("/status.json after the reload: %s drained_by %q, want drained by api", st, by)
	}

	code, body, caller = api.post(t, "/api/v1/undrain", token, `{"zone":"write.lan.","backend":"`+drained+`"}`)
	if code != http.StatusOK {
		t.Fatalf("undrain: %d %s", code, body)
	}
	harness.Eventually(t, 5*time.Second, serves("write.lan.", drained, live), "the undrained backend back in the answers")
	if line := "zone write.lan.: backend " + drained + ": undrained by " + caller + " via the status API"; !harness.Poll(5*time.Second, 10*time.Millisecond, func() bool { return logged(line) }) {
		t.Errorf("no log line %q", line)
	}

	// nopreempt: the primary dies, the standby serves, and keeps serving once the primary is
	// back, until the fail-back.
	harness.Eventually(t, 5*time.Second, serves("fb.lan.", primary), "fb.lan on its primary")
	backends[primary].Stop()
	harness.Eventually(t, 5*time.Second, serves("fb.lan.", standby), "fb.lan on the standby once the primary died")
	backends[primary].Start()
	harness.Eventually(t, 5*time.Second, func() bool { st, _ := api.drainedBy(t, "fb.lan.", primary); return st == "up" }, "the primary up again")
	if !serves("fb.lan.", standby)() {
		t.Fatalf("nopreempt: fb.lan moved back to the primary on its own: %v", s.Addrs(t, "udp", "fb.lan.", dns.TypeA))
	}
	code, body, caller = api.post(t, "/api/v1/failback", token, `{"zone":"fb.lan"}`)
	if code != http.StatusOK || !strings.Contains(body, `"from":100,"to":200`) {
		t.Fatalf("failback: %d %s", code, body)
	}
	harness.Eventually(t, 5*time.Second, serves("fb.lan.", primary), "fb.lan back on the primary after the fail-back")
	if line := "zone fb.lan.: ipv4 now served by priority group 200 (was 100): fail-back by " + caller + " via the status API"; !harness.Poll(5*time.Second, 10*time.Millisecond, func() bool { return logged(line) }) {
		t.Errorf("no log line %q", line)
	}
	if code, body, _ := api.post(t, "/api/v1/failback", token, `{"zone":"fb.lan"}`); code != http.StatusConflict || !strings.Contains(body, "served by group 200") {
		t.Errorf("a second failback: %d %s, want 409 saying group 200 serves", code, body)
	}
	if !s.Alive() {
		t.Fatal("coredns exited")
	}
}
