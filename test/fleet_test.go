package test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/healthdns/healthdns/test/harness"
)

// get reads key from etcd, "" when it is absent.
func get(t *testing.T, c *clientv3.Client, key string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	r, err := c.Get(ctx, key)
	if err != nil {
		t.Fatalf("get %s: %v", key, err)
	}
	if len(r.Kvs) == 0 {
		return ""
	}
	return string(r.Kvs[0].Value)
}

// fleetAnswers waits until every server answers zone's A query with ips alone, then checks for
// 2 s that none drifts from it.
func fleetAnswers(t *testing.T, servers []*harness.Server, zone, what string, ips ...string) {
	t.Helper()
	start := time.Now()
	for i, s := range servers {
		harness.Eventually(t, 10*time.Second, func() bool {
			return harness.SameSet(s.Addrs(t, "udp", zone, dns.TypeA), ips...)
		}, "server ", i+1, " to answer ", ips, ": ", what)
	}
	t.Logf("%s: every server answers %v after %s", what, ips, time.Since(start).Round(time.Millisecond))
	for end := time.Now().Add(2 * time.Second); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		for i, s := range servers {
			if got := s.Addrs(t, "udp", zone, dns.TypeA); !harness.SameSet(got, ips...) {
				t.Fatalf("%s: server %d answers %v, want %v", what, i+1, got, ips)
			}
		}
	}
}

// sourceConnected is a server's source_connected for zone.
func sourceConnected(t *testing.T, s *harness.Server, zone string) float64 {
	v, _ := s.Scrape(t).Value("coredns_healthdns_source_connected", map[string]string{"zone": zone, "source": "etcd"})
	return v
}

// TestFleetReconcilesAfterOutage: two servers under nopreempt agree on the primary's group
// through etcd. etcd goes away, the primary fails and both move to the standby on their own;
// the primary recovers and nopreempt keeps them there. When etcd returns, the key written
// before the outage (200) must not move them back: they reconcile by proposing what they
// serve against the revision they last saw, one wins, the other reads it back, and the key
// ends on 100 with the whole fleet still on the standby.
func TestFleetReconcilesAfterOutage(t *testing.T) {
	harness.RequireEtcd(t)
	t.Parallel()
	const primary, standby = "127.0.3.1", "127.0.3.2"
	const zone, prefix = "reconcile.lan.", "/healthdns/reconcile.lan/"
	port, backends := harness.StartBackends(t, primary, standby)
	etcd := harness.StartEtcd(t)
	kv := etcd.Client(t)
	put(t, kv, prefix+primary, "priority 200")
	put(t, kv, prefix+standby, "priority 100")
	conf := ".:{{PORT}} {\n bind 127.0.0.1\n prometheus {{METRICS}}\n" + etcdPool("reconcile.lan", etcd.Endpoint(), port, "nopreempt") + "}\n"
	servers := []*harness.Server{harness.Start(t, conf), harness.Start(t, conf)}

	fleetAnswers(t, servers, zone, "the primary healthy", primary)
	harness.Eventually(t, 10*time.Second, func() bool { return get(t, kv, prefix+"_group/ipv4") == "200" }, "group 200 agreed")

	etcd.Stop()
	for i, s := range servers {
		harness.Eventually(t, 10*time.Second, func() bool { return sourceConnected(t, s, "reconcile.lan.") == 0 }, "server ", i+1, " to see etcd gone")
	}
	backends[primary].Stop()
	fleetAnswers(t, servers, zone, "etcd away, the primary failed", standby)
	backends[primary].Start()
	fleetAnswers(t, servers, zone, "etcd away, the primary back (nopreempt)", standby)

	seen := make([]int, len(servers))
	for i, s := range servers {
		seen[i] = len(s.Output())
	}
	etcd.Start()
	for i, s := range servers {
		harness.Eventually(t, 15*time.Second, func() bool { return sourceConnected(t, s, "reconcile.lan.") == 1 }, "server ", i+1, " to reach etcd again")
	}
	harness.Eventually(t, 10*time.Second, func() bool { return get(t, kv, prefix+"_group/ipv4") == "100" },
		"the key to end on 100, what the fleet did while etcd was away")
	fleetAnswers(t, servers, zone, "etcd back", standby)
	for i, s := range servers {
		if since := s.Output()[seen[i]:]; strings.Contains(since, "now served by priority group 200") {
			t.Errorf("server %d moved back to the primary when etcd returned:\n%s", i+1, since)
		}
	}

	// Only an operator moves the fleet back: a fail-back written to etcd.
	put(t, kv, prefix+"_group/ipv4", "200")
	fleetAnswers(t, servers, zone, fmt.Sprintf("fail-back written to etcd %s_group/ipv4", prefix), primary)
}

// etcdSources reads the etcd sources of /status.json at url: the skipped keys and their errors,
// by zone.
func etcdSources(t *testing.T, url string) map[string]map[string]string {
	t.Helper()
	resp, err := (&http.Client{Timeout: 2 * time.Second}).Get(url)
	if err != nil {
		t.Fatalf("%s: %v", url, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var doc struct {
		Pools []struct {
			Zone    string `json:"zone"`
			Sources []struct {
				Kind    string `json:"kind"`
				Skipped []struct {
					Key   string `json:"key"`
					Error string `json:"error"`
				} `json:"skipped"`
			} `json:"sources"`
		} `json:"pools"`
	}
	if err := json.Unmarshal(body, &doc); err != nil {
		t.Fatalf("%s: %v: %s", url, err, body)
	}
	out := map[string]map[string]string{}
	for _, p := range doc.Pools {
		for _, s := range p.Sources {
			if s.Kind != "etcd" {
				continue
			}
			out[p.Zone] = map[string]string{}
			for _, k := range s.Skipped {
				out[p.Zone][k.Key] = k.Error
			}
		}
	}
	return out
}

// TestEtcdBadKeySkipped: in etcd each key is one backend, so a key that does not parse is
// skipped, and every other key still applies: a drain of .13 written after a bad key reaches
// the answers. The bad key is logged with its error, counted, and named by /status.json and
// source_skipped_keys until it is deleted.
func TestEtcdBadKeySkipped(t *testing.T) {
	harness.RequireEtcd(t)
	t.Parallel()
	const a, b, c = "127.0.3.11", "127.0.3.12", "127.0.3.13"
	const prefix, bad = "/healthdns/skip.lan/", "/healthdns/skip.lan/web3"
	port, _ := harness.StartBackends(t, a, b, c)
	etcd := harness.StartEtcd(t)
	kv := etcd.Client(t)
	for _, ip := range []string{a, b, c} {
		put(t, kv, prefix+ip, "")
	}
	statusAddr := "127.0.0.1:" + strconv.Itoa(harness.FreePort(t))
	s := harness.Start(t, ".:{{PORT}} {\n bind 127.0.0.1\n prometheus {{METRICS}}\n"+
		etcdPool("skip.lan", etcd.Endpoint(), port, "status "+statusAddr)+"}\n")
	status := "http://" + statusAddr + "/status.json"
	metric := func(name string) float64 {
		v, _ := s.Scrape(t).Value(name, map[string]string{"zone": "skip.lan.", "source": "etcd"})
		return v
	}
	harness.Eventually(t, 10*time.Second, func() bool { return harness.SameSet(s.Addrs(t, "udp", "skip.lan.", dns.TypeA), a, b, c) }, "the first list")

	put(t, kv, bad, "")
	line := "zone skip.lan.: backends_etcd: etcd key " + bad + ": invalid address 'web3'"
	harness.Eventually(t, 10*time.Second, func() bool { return strings.Contains(s.Output(), line) }, "a log line naming the bad key")
	put(t, kv, prefix+c, "drain maintenance")
	harness.Eventually(t, 10*time.Second, func() bool { return harness.SameSet(s.Addrs(t, "udp", "skip.lan.", dns.TypeA), a, b) },
		"the drain of ", c, " applied beside the bad key")
	if got := etcdSources(t, status)["skip.lan."]; len(got) != 1 || !strings.Contains(got[bad], "invalid address 'web3'") {
		t.Errorf("/status.json's etcd source skips %v, want %s and its error", got, bad)
	}
	pageShows(t, "http://"+statusAddr+"/", `data-skipped-key="`+bad+`"`, "skipped key "+bad+": invalid address 'web3'")
	if n := metric("coredns_healthdns_source_skipped_keys"); n != 1 {
		t.Errorf("source_skipped_keys = %v, want 1", n)
	}
	// An outage counts too: a machine busy enough can make etcd miss a progress report.
	outages := func() float64 { return float64(strings.Count(s.Output(), "backends_etcd: cannot follow etcd")) }
	before := outages()
	if n, after := metric("coredns_healthdns_source_errors_total"), outages(); n < 1+before || n > 1+after {
		t.Errorf("source_errors_total = %v, want 1 (and %v outages): the bad key counted once, though two lists had it", n, after)
	}
	if n := strings.Count(s.Output(), line); n != 1 {
		t.Errorf("the bad key logged %d times, want once:\n%s", n, s.Output())
	}

	del(t, kv, bad)
	harness.Eventually(t, 10*time.Second, func() bool { return len(etcdSources(t, status)["skip.lan."]) == 0 }, "/status.json to clear the deleted key")
	if n := metric("coredns_healthdns_source_skipped_keys"); n != 0 {
		t.Errorf("source_skipped_keys = %v after the delete, want 0", n)
	}
	harness.Eventually(t, 5*time.Second, func() bool { return strings.Contains(s.Output(), "etcd key "+bad+" no longer skipped") }, "a log line saying the key is no longer skipped")
}

// TestFleetDrain: two servers on one etcd. A drain through server 1's status API is written to
// etcd, so server 2 stops answering the backend too; an undrain through server 2 reverses both;
// a drain's until ends it on both; a server started later applies a drain already in etcd;
// and while etcd is unreachable an API drain is refused rather than applied to one server.
func TestFleetDrain(t *testing.T) {
	harness.RequireEtcd(t)
	t.Parallel()
	const a, b = "127.0.3.21", "127.0.3.22"
	const zone, prefix = "fleetdrain.lan.", "/healthdns/fleetdrain.lan/"
	port, _ := harness.StartBackends(t, a, b)
	etcd := harness.StartEtcd(t)
	kv := etcd.Client(t)
	put(t, kv, prefix+a, "")
	put(t, kv, prefix+b, "")
	const token = "fleet-drain-s3cret-0123456789"
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var servers []*harness.Server
	var apis []*apiClient
	start := func() {
		statusAddr := "127.0.0.1:" + strconv.Itoa(harness.FreePort(t))
		servers = append(servers, harness.Start(t, ".:{{PORT}} {\n bind 127.0.0.1\n prometheus {{METRICS}}\n"+
			etcdPool("fleetdrain.lan", etcd.Endpoint(), port, "status "+statusAddr+" token "+tokenFile)+"}\n"))
		apis = append(apis, &apiClient{base: "http://" + statusAddr, token: token, http: &http.Client{Timeout: 10 * time.Second}})
	}
	start()
	start()
	answers := func(i int) []string { return servers[i].Addrs(t, "udp", zone, dns.TypeA) }
	fleetAnswers(t, servers, zone, "the first list", a, b)

	code, body, caller := apis[0].post(t, "/api/v1/drain", token, `{"zone":"fleetdrain.lan","backend":"`+b+`","reason":"kernel upgrade"}`)
	if code != http.StatusOK {
		t.Fatalf("drain through server 1: %d %s", code, body)
	}
	// The server that took the write applies it before it answers.
	if got := answers(0); !harness.SameSet(got, a) {
		t.Errorf("server 1 answers %v right after its API drained %s, want %s", got, b, a)
	}
	fleetAnswers(t, servers, zone, "drained through server 1's API", a)
	var v struct{ Reason, By string }
	if err := json.Unmarshal([]byte(get(t, kv, prefix+"_drain/"+b)), &v); err != nil || v.Reason != "kernel upgrade" || v.By != caller {
		t.Errorf("etcd %s_drain/%s = %+v (%v), want the reason and the caller %s", prefix, b, v, err, caller)
	}
	if state, by := apis[1].drainedBy(t, zone, b); state != "drained" || by != "api" {
		t.Errorf("server 2's /status.json says %s is %q by %q, want drained by api", b, state, by)
	}
	line := "zone " + zone + ": backend " + b + ": drained by " + caller + " via the status API (etcd " + prefix + "_drain/" + b + ")"
	harness.Eventually(t, 5*time.Second, func() bool { return strings.Contains(servers[1].Output(), line) }, "server 2 to log the fleet's drain")

	if code, body, _ := apis[1].post(t, "/api/v1/undrain", token, `{"zone":"fleetdrain.lan","backend":"`+b+`"}`); code != http.StatusOK {
		t.Fatalf("undrain through server 2: %d %s", code, body)
	}
	if got := answers(1); !harness.SameSet(got, a, b) {
		t.Errorf("server 2 answers %v right after its API undrained %s, want both", got, b)
	}
	fleetAnswers(t, servers, zone, "undrained through server 2's API", a, b)
	if code, body, _ := apis[0].post(t, "/api/v1/undrain", token, `{"zone":"fleetdrain.lan","backend":"`+b+`"}`); code != http.StatusConflict {
		t.Errorf("second undrain through server 1: %d %s, want 409", code, body)
	}

	until := time.Now().Add(6 * time.Second).UTC().Format(time.RFC3339)
	if code, body, _ := apis[0].post(t, "/api/v1/drain", token, `{"zone":"fleetdrain.lan","backend":"`+b+`","until":"`+until+`"}`); code != http.StatusOK {
		t.Fatalf("drain until %s through server 1: %d %s", until, code, body)
	}
	for i := range servers {
		harness.Eventually(t, 10*time.Second, func() bool { return harness.SameSet(answers(i), a) }, "server ", i+1, " to take the drain until ", until)
	}
	for i := range servers {
		harness.Eventually(t, 15*time.Second, func() bool { return harness.SameSet(answers(i), a, b) }, "server ", i+1, " to end the drain at ", until)
	}
	harness.Eventually(t, 5*time.Second, func() bool { return get(t, kv, prefix+"_drain/"+b) == "" }, "the ended drain's key deleted")

	// A drain in etcd outlives the servers: one started now applies it.
	if code, body, _ := apis[1].post(t, "/api/v1/drain", token, `{"zone":"fleetdrain.lan","backend":"`+b+`"}`); code != http.StatusOK {
		t.Fatalf("drain through server 2: %d %s", code, body)
	}
	start()
	fleetAnswers(t, servers, zone, "a drain written before server 3 started", a)

	// Cut off from etcd, a drain is refused: applied on one server it would split the fleet.
	etcd.Stop()
	harness.Eventually(t, 10*time.Second, func() bool { return sourceConnected(t, servers[0], zone) == 0 }, "server 1 to see etcd gone")
	code, body, _ = apis[0].post(t, "/api/v1/undrain", token, `{"zone":"fleetdrain.lan","backend":"`+b+`"}`)
	if code != http.StatusServiceUnavailable || !strings.Contains(body, "cannot be reached") {
		t.Errorf("undrain with etcd away: %d %s, want 503 saying etcd cannot be reached", code, body)
	}
	fleetAnswers(t, servers, zone, "etcd away", a)
}
