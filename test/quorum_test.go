package test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/healthdns/healthdns/test/harness"
)

// keyVersion reads key's value and its version (how many times it was written since it was
// created; 0 when absent).
func keyVersion(t *testing.T, c *clientv3.Client, key string) (string, int64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	r, err := c.Get(ctx, key)
	if err != nil {
		t.Fatalf("get %s: %v", key, err)
	}
	if len(r.Kvs) == 0 {
		return "", 0
	}
	return string(r.Kvs[0].Value), r.Kvs[0].Version
}

// agreementOf reads the ipv4 agreement of zone from a server's /status.json.
func agreementOf(t *testing.T, statusAddr, zone string) (disagrees uint8, views int, quorum string) {
	t.Helper()
	resp, err := (&http.Client{Timeout: 2 * time.Second}).Get("http://" + statusAddr + "/status.json")
	if err != nil {
		t.Fatalf("status.json: %v", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var doc struct {
		Pools []struct {
			Zone     string `json:"zone"`
			Families []struct {
				Family    string `json:"family"`
				Agreement *struct {
					Quorum    string `json:"quorum"`
					Views     int    `json:"views"`
					Disagrees uint8  `json:"disagrees"`
				} `json:"agreement"`
			} `json:"families"`
		} `json:"pools"`
	}
	if err := json.Unmarshal(body, &doc); err != nil {
		t.Fatalf("status.json: %v: %s", err, body)
	}
	for _, p := range doc.Pools {
		for _, f := range p.Families {
			if p.Zone == zone && f.Family == "ipv4" && f.Agreement != nil {
				return f.Agreement.Disagrees, f.Agreement.Views, f.Agreement.Quorum
			}
		}
	}
	t.Fatalf("status.json has no ipv4 agreement for %s: %s", zone, body)
	return 0, 0, ""
}

// TestFleetQuorum: three servers under nopreempt agree through etcd with the default
// fleet_quorum (a majority of the live views). Each checks a port of its own, on which both the
// primary and the standby listen: closing the primary's listener on one server's port cuts that
// server alone from the primary. One server's false alarm does not move the fleet; that server
// answers from the standby meanwhile and says so (log, /status.json, fleet_disagreement). Two
// servers' do, once. Then nopreempt holds across a server's restart, an etcd restart and a server
// that joins late; only the operator's fail-back moves the fleet back.
func TestFleetQuorum(t *testing.T) {
	harness.RequireEtcd(t)
	t.Parallel()
	const primary, standby = "127.0.17.1", "127.0.17.2"
	const zone, prefix = "quorum.lan.", "/healthdns/quorum.lan/"
	const groupKey = prefix + "_group/ipv4"
	etcd := harness.StartEtcd(t)
	kv := etcd.Client(t)
	put(t, kv, prefix+primary, "priority 200")
	put(t, kv, prefix+standby, "priority 100")
	var ports []int
	var primaries []*harness.Backend
	statusAddrs := make([]string, 4)
	// Server 3's status listener has a token, for the operator's fail-back through its API.
	const token = "quorum-s3cret-0123456789"
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	conf := func(i int) string {
		status := "status " + statusAddrs[i]
		if i == 2 {
			status += " token " + tokenFile
		}
		return ".:{{PORT}} {\n bind 127.0.0.1\n prometheus {{METRICS}}\n" +
			etcdPool("quorum.lan", etcd.Endpoint(), ports[i], "nopreempt", status) + "}\n"
	}
	for i := range 4 { // the fourth joins late
		ports = append(ports, harness.FreePort(t, primary, standby))
		primaries = append(primaries, harness.StartBackend(t, primary, ports[i]))
		harness.StartBackend(t, standby, ports[i])
		statusAddrs[i] = "127.0.0.1:" + strconv.Itoa(harness.FreePort(t))
	}
	servers := []*harness.Server{harness.Start(t, conf(0)), harness.Start(t, conf(1)), harness.Start(t, conf(2))}
	disagreement := func(s *harness.Server) float64 {
		v, _ := s.Scrape(t).Value("coredns_healthdns_fleet_disagreement", map[string]string{"zone": zone, "family": "ipv4"})
		return v
	}

	fleetAnswers(t, servers, zone, "every server sees the primary", primary)
	harness.Eventually(t, 10*time.Second, func() bool { return get(t, kv, groupKey) == "200" }, "group 200 agreed")
	_, version := keyVersion(t, kv, groupKey)
	if _, views, quorum := agreementOf(t, statusAddrs[0], zone); views != 3 || quorum != "majority" {
		t.Errorf("server 1's /status.json: %d views, quorum %q; want 3 and majority", views, quorum)
	}

	// Server 1's false alarm: it answers from the standby, the other two stay on the primary,
	// and the key does not move.
	primaries[0].Stop()
	fleetAnswers(t, servers[:1], zone, "server 1 cut from the primary", standby)
	fleetAnswers(t, servers[1:], zone, "server 1 cut from the primary (servers 2 and 3)", primary)
	if v, n := keyVersion(t, kv, groupKey); v != "200" || n != version {
		t.Fatalf("one server's false alarm moved the fleet: %s = %s (version %d, was %d)", groupKey, v, n, version)
	}
	harness.Eventually(t, 10*time.Second, func() bool { return disagreement(servers[0]) == 1 }, "server 1's fleet_disagreement to be 1")
	if d, _, _ := agreementOf(t, statusAddrs[0], zone); d != 200 {
		t.Errorf("server 1's /status.json: disagrees %d, want 200", d)
	}
	const disagrees = "the fleet serves priority group 200, which this server sees with no healthy backend"
	if n := strings.Count(servers[0].Output(), disagrees); n != 1 {
		t.Errorf("server 1 logged its disagreement %d times, want once:\n%s", n, servers[0].Output())
	}
	for i, s := range servers[1:] {
		if v := disagreement(s); v != 0 {
			t.Errorf("server %d's fleet_disagreement = %v, want 0", i+2, v)
		}
	}

	// A second server cut: a quorum sees the primary down, and the fleet moves, once.
	primaries[1].Stop()
	fleetAnswers(t, servers, zone, "servers 1 and 2 cut from the primary", standby)
	if v, n := keyVersion(t, kv, groupKey); v != "100" || n != version+1 {
		t.Errorf("%s = %s at version %d after two servers lost the primary; want 100 at version %d (one move)", groupKey, v, n, version+1)
	}
	version++
	harness.Eventually(t, 10*time.Second, func() bool { return disagreement(servers[0]) == 0 }, "server 1 to agree again")

	// The primary back for everyone: nopreempt keeps the fleet on the standby, across a
	// server's restart, an etcd restart, and a server that joins late.
	primaries[0].Start()
	primaries[1].Start()
	fleetAnswers(t, servers, zone, "the primary back (nopreempt)", standby)

	if err := syscall.Kill(servers[2].Pid(), syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	harness.Eventually(t, 15*time.Second, func() bool { return !servers[2].Alive() }, "server 3 to exit")
	servers[2] = harness.Start(t, conf(2))
	fleetAnswers(t, servers, zone, "server 3 restarted (nopreempt)", standby)

	etcd.Stop()
	for i, s := range servers {
		harness.Eventually(t, 10*time.Second, func() bool { return sourceConnected(t, s, zone) == 0 }, "server ", i+1, " to see etcd gone")
	}
	etcd.Start()
	kv = etcd.Client(t)
	for i, s := range servers {
		harness.Eventually(t, 15*time.Second, func() bool { return sourceConnected(t, s, zone) == 1 }, "server ", i+1, " to reach etcd again")
	}
	fleetAnswers(t, servers, zone, "etcd restarted (nopreempt)", standby)

	servers = append(servers, harness.Start(t, conf(3)))
	fleetAnswers(t, servers, zone, "server 4 joined late (nopreempt)", standby)
	if v, n := keyVersion(t, kv, groupKey); v != "100" || n != version {
		t.Errorf("%s = %s at version %d after the restarts and the late join; want 100 at version %d, unmoved", groupKey, v, n, version)
	}
	for i, s := range servers {
		if strings.Contains(s.Output(), "now served by priority group 200 (was 100)") {
			t.Errorf("server %d moved back to the primary by itself:\n%s", i+1, s.Output())
		}
	}

	// The operator's fail-back through server 3's API needs no quorum: the fleet follows.
	api := &apiClient{base: "http://" + statusAddrs[2], token: token, http: &http.Client{Timeout: 5 * time.Second}}
	if code, body, _ := api.post(t, "/api/v1/failback", token, `{"zone":"quorum.lan"}`); code != http.StatusOK {
		t.Fatalf("fail-back through the status API: %d %s", code, body)
	}
	fleetAnswers(t, servers, zone, "fail-back through server 3's status API", primary)
	if v := get(t, kv, groupKey); v != "200" {
		t.Errorf("%s = %s after the fail-back, want 200", groupKey, v)
	}
}

// TestFleetQuorumReturn: after every group of a fleet went down, the return is one
// compare-and-swap to the highest group a quorum sees healthy, not whichever group one server
// saw first, nor the group agreed before the outage. The fleet starts on the standby (a
// failover, kept by nopreempt), then ten times both groups die and come back together, the
// standby 300 ms first: each time the key goes to 0 (none) and then, in one write, to 200.
func TestFleetQuorumReturn(t *testing.T) {
	harness.RequireEtcd(t)
	t.Parallel()
	const primary, standby = "127.0.17.11", "127.0.17.12"
	const zone, prefix = "return.lan.", "/healthdns/return.lan/"
	const groupKey = prefix + "_group/ipv4"
	port, backends := harness.StartBackends(t, primary, standby)
	etcd := harness.StartEtcd(t)
	kv := etcd.Client(t)
	put(t, kv, prefix+primary, "priority 200")
	put(t, kv, prefix+standby, "priority 100")
	conf := ".:{{PORT}} {\n bind 127.0.0.1\n" + etcdPool("return.lan", etcd.Endpoint(), port, "nopreempt") + "}\n"
	servers := []*harness.Server{harness.Start(t, conf), harness.Start(t, conf), harness.Start(t, conf)}

	fleetAnswers(t, servers, zone, "both groups healthy", primary)
	backends[primary].Stop()
	fleetAnswers(t, servers, zone, "the primary failed", standby)
	backends[primary].Start()
	fleetAnswers(t, servers, zone, "the primary back (nopreempt)", standby)
	harness.Eventually(t, 10*time.Second, func() bool { return get(t, kv, groupKey) == "100" }, "group 100 agreed")

	for round := 1; round <= 10; round++ {
		backends[primary].Stop()
		backends[standby].Stop()
		harness.Eventually(t, 15*time.Second, func() bool { return get(t, kv, groupKey) == "0" }, "round ", round, ": the fleet all down (key 0)")
		_, version := keyVersion(t, kv, groupKey)
		// Together as one outage's backends come back, after it lasted longer than the
		// servers' limit on proposals (1 s): the standby a moment first, well within the hold
		// (rise 2 × interval 100 ms, the timeout, and a second), as probes may see them on any
		// server. Without the hold, the standby's group wins.
		time.Sleep(1200 * time.Millisecond)
		backends[standby].Start()
		time.Sleep(300 * time.Millisecond)
		backends[primary].Start()
		// All down, serve_all answers the primary's address already: the key says when the
		// fleet has chosen.
		harness.Eventually(t, 15*time.Second, func() bool { return get(t, kv, groupKey) != "0" }, "round ", round, ": the fleet's choice")
		fleetAnswers(t, servers, zone, "round "+strconv.Itoa(round)+": both groups back together", primary)
		if v, n := keyVersion(t, kv, groupKey); v != "200" || n != version+1 {
			t.Fatalf("round %d: %s = %s at version %d; want 200 at version %d, one compare-and-swap", round, groupKey, v, n, version+1)
		}
	}
}

// randomSchedule is a randomized test's number of steps, defaultSteps unless
// HEALTHDNS_QUORUM_STEPS says (bench/quorum/run.sh), and its random source, from
// HEALTHDNS_QUORUM_SEED to replay a schedule, else from the clock; the test logs both.
func randomSchedule(t *testing.T, defaultSteps int) (int, *rand.Rand) {
	t.Helper()
	steps, seed := defaultSteps, time.Now().UnixNano()
	if v := os.Getenv("HEALTHDNS_QUORUM_STEPS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			t.Fatalf("HEALTHDNS_QUORUM_STEPS=%q: want a number of steps", v)
		}
		steps = n
	}
	if v := os.Getenv("HEALTHDNS_QUORUM_SEED"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			t.Fatalf("HEALTHDNS_QUORUM_SEED=%q: want the seed a run logged", v)
		}
		seed = n
	}
	t.Logf("seed %d, %d steps", seed, steps)
	return steps, rand.New(rand.NewPCG(uint64(seed), 26))
}

// TestFleetQuorumRandomCuts: a short randomized schedule of cuts between three servers and the
// primary alone (TestFleetQuorumChaos mixes them with cuts from etcd, kills and backend deaths,
// and is the bench's). After each step the key must say what the quorum allows: on 200 it
// moves to 100 exactly when two servers or more are cut, in one write, logged by the server
// that wrote it; with one or none cut it stays, every server that sees the primary answering
// it and a cut one the standby; on 100 it stays (nopreempt) until the operator's fail-back,
// which the test writes when no server is cut.
func TestFleetQuorumRandomCuts(t *testing.T) {
	harness.RequireEtcd(t)
	t.Parallel()
	const primary, standby = "127.0.17.21", "127.0.17.22"
	const zone, prefix = "random.lan.", "/healthdns/random.lan/"
	const groupKey = prefix + "_group/ipv4"
	steps, rng := randomSchedule(t, 12)
	etcd := harness.StartEtcd(t)
	kv := etcd.Client(t)
	put(t, kv, prefix+primary, "priority 200")
	put(t, kv, prefix+standby, "priority 100")
	var servers []*harness.Server
	var primaries []*harness.Backend
	for range 3 {
		port := harness.FreePort(t, primary, standby)
		primaries = append(primaries, harness.StartBackend(t, primary, port))
		harness.StartBackend(t, standby, port)
		servers = append(servers, harness.Start(t, ".:{{PORT}} {\n bind 127.0.0.1\n"+etcdPool("random.lan", etcd.Endpoint(), port, "nopreempt")+"}\n"))
	}
	fleetAnswers(t, servers, zone, "no cut", primary)
	harness.Eventually(t, 10*time.Second, func() bool { return get(t, kv, groupKey) == "200" }, "group 200 agreed")

	cut := make([]bool, len(servers))
	moves := 0
	for step := 1; step <= steps; step++ {
		next := make([]bool, len(servers))
		n := 0
		for i := range next {
			next[i] = rng.IntN(5) < 2
			if next[i] {
				n++
			}
		}
		// Mends before cuts, with the views given time to say so: the servers cut at once are
		// never more than the step's.
		for i := range cut {
			if cut[i] && !next[i] {
				primaries[i].Start()
			}
		}
		time.Sleep(time.Second)
		for i := range cut {
			if next[i] && !cut[i] {
				primaries[i].Stop()
			}
		}
		cut = next
		what := fmt.Sprintf("step %d: servers cut %v", step, cut)
		was, version := keyVersion(t, kv, groupKey)
		switch {
		case was == "200" && n >= 2:
			harness.Eventually(t, 10*time.Second, func() bool { return get(t, kv, groupKey) == "100" }, what, ": the fleet to move")
			moves++
			fleetAnswers(t, servers, zone, what, standby)
			if v, n := keyVersion(t, kv, groupKey); v != "100" || n != version+1 {
				t.Fatalf("%s: %s = %s at version %d, want 100 at %d: one write", what, groupKey, v, n, version+1)
			}
		case was == "200":
			var seeing, cutOff []*harness.Server
			for i, s := range servers {
				if cut[i] {
					cutOff = append(cutOff, s)
				} else {
					seeing = append(seeing, s)
				}
			}
			fleetAnswers(t, seeing, zone, what, primary)
			fleetAnswers(t, cutOff, zone, what+" (the cut one)", standby)
			if v, n := keyVersion(t, kv, groupKey); v != "200" || n != version {
				t.Fatalf("%s: %s = %s at version %d, want 200 at %d: no quorum saw the primary down", what, groupKey, v, n, version)
			}
		default:
			fleetAnswers(t, servers, zone, what+" (nopreempt)", standby)
			if v, n := keyVersion(t, kv, groupKey); v != "100" || n != version {
				t.Fatalf("%s: %s = %s at version %d, want 100 at %d (nopreempt)", what, groupKey, v, n, version)
			}
			if n == 0 {
				put(t, kv, groupKey, "200")
				fleetAnswers(t, servers, zone, what+": fail-back", primary)
			}
		}
	}
	logged := 0
	for _, s := range servers {
		logged += strings.Count(s.Output(), "priority group 100 agreed for the fleet (etcd "+groupKey+", was 200)")
	}
	if logged != moves {
		t.Errorf("%d moves to the standby, %d logged by the server that made them", moves, logged)
	}
	t.Logf("%d steps, %d moves", steps, moves)
}
