package test

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/healthdns/healthdns/test/harness"
)

// etcdPool is a healthdns block over an etcd prefix, TCP-checked on port.
func etcdPool(zone, endpoint string, port int, extra ...string) string {
	lines := []string{"backends_etcd {\n   endpoint " + endpoint + "\n  }", "answers 8"}
	return harness.TCPPool(zone, port, "100ms", "50ms", nil, append(lines, extra...)...)
}

func put(t *testing.T, c *clientv3.Client, key, value string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := c.Put(ctx, key, value); err != nil {
		t.Fatalf("put %s: %v", key, err)
	}
}

func del(t *testing.T, c *clientv3.Client, key string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := c.Delete(ctx, key); err != nil {
		t.Fatalf("delete %s: %v", key, err)
	}
}

// TestBackendsEtcd: two healthdns processes follow one etcd prefix; puts and deletes reach both
// within about a second (the time is logged), a bad value keeps the last good list, and etcd
// stopped under a steady query load fails no query and serves the last list, then a restart
// brings changes again.
func TestBackendsEtcd(t *testing.T) {
	harness.RequireEtcd(t)
	t.Parallel()
	const a, b, c, d = "127.0.1.110", "127.0.1.111", "127.0.1.112", "127.0.1.113"
	const prefix = "/healthdns/etcd.lan/"
	port, _ := harness.StartBackends(t, a, b, c, d)
	etcd := harness.StartEtcd(t)
	kv := etcd.Client(t)
	put(t, kv, prefix+a, "")
	put(t, kv, prefix+b, "weight 2")

	conf := ".:{{PORT}} {\n bind 127.0.0.1\n prometheus {{METRICS}}\n" + etcdPool("etcd.lan", etcd.Endpoint(), port) + "}\n"
	servers := []*harness.Server{harness.Start(t, conf), harness.Start(t, conf)}
	seen := func(what string, ips ...string) {
		t.Helper()
		start := time.Now()
		for i, s := range servers {
			harness.Eventually(t, 5*time.Second, func() bool {
				return harness.SameSet(s.Addrs(t, "udp", "etcd.lan.", dns.TypeA), ips...)
			}, "server ", i+1, ": ", what, ": want ", ips)
		}
		t.Logf("%s: both servers answer it after %s", what, time.Since(start).Round(time.Millisecond))
	}
	seen("the first list", a, b)
	put(t, kv, prefix+c, "")
	seen("a put", a, b, c)
	del(t, kv, prefix+a)
	seen("a delete", b, c)
	put(t, kv, prefix+c, "priority 200")
	seen("a priority change", c)
	put(t, kv, prefix+c, "priority 200 drain maintenance")
	seen("a drain", b)

	errorsTotal := func(s *harness.Server) float64 {
		v, _ := s.Scrape(t).Value("coredns_healthdns_source_errors_total", map[string]string{"zone": "etcd.lan", "source": "etcd"})
		return v
	}
	put(t, kv, prefix+d, "weight heavy")
	harness.Eventually(t, 5*time.Second, func() bool { return errorsTotal(servers[0]) == 1 }, "the bad value counted")
	if got := servers[0].Addrs(t, "udp", "etcd.lan.", dns.TypeA); !harness.SameSet(got, b) {
		t.Errorf("after a bad value: %v, want the last good list's %s", got, b)
	}
	if !harness.Poll(5*time.Second, 10*time.Millisecond, func() bool {
		return strings.Contains(servers[0].Output(), "etcd key "+prefix+d+": invalid weight 'heavy'")
	}) {
		t.Errorf("no log line names the bad key:\n%s", servers[0].Output())
	}
	put(t, kv, prefix+d, "")
	seen("the value fixed", b, d)

	// etcd goes away under 1,000 queries a second: nothing fails, the last list serves.
	var failed, asked atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tick := time.NewTicker(4 * time.Millisecond)
			defer tick.Stop()
			for {
				select {
				case <-stop:
					return
				case <-tick.C:
				}
				asked.Add(1)
				r, err := servers[0].Try("udp", "etcd.lan.", dns.TypeA, time.Second)
				if err != nil || r.Rcode != dns.RcodeSuccess || !harness.SameSet(harness.AnswerAddrs(r), b, d) {
					failed.Add(1)
				}
			}
		}()
	}
	etcd.Stop()
	connected := func() float64 {
		v, _ := servers[0].Scrape(t).Value("coredns_healthdns_source_connected", map[string]string{"zone": "etcd.lan", "source": "etcd"})
		return v
	}
	harness.Eventually(t, 10*time.Second, func() bool { return connected() == 0 }, "source_connected to say 0")
	time.Sleep(2 * time.Second) // the outage goes on under load
	etcd.Start()
	harness.Eventually(t, 15*time.Second, func() bool { return connected() == 1 }, "source_connected back to 1")
	close(stop)
	wg.Wait()
	t.Logf("%d queries during the outage, %d failed or answered otherwise", asked.Load(), failed.Load())
	if failed.Load() != 0 || asked.Load() < 1000 {
		t.Errorf("%d of %d queries failed or got another list while etcd was away; want none of at least 1,000", failed.Load(), asked.Load())
	}
	if n := strings.Count(servers[0].Output(), "cannot follow etcd"); n != 1 {
		t.Errorf("the outage was logged %d times, want once:\n%s", n, servers[0].Output())
	}
	put(t, kv, prefix+a, "")
	seen("a put after etcd came back", a, b, d)
}

// TestBackendsEtcdAwaited: a server started while etcd is down starts, is not ready, and
// answers as all_down says; once etcd is up its list is served and the server is ready.
func TestBackendsEtcdAwaited(t *testing.T) {
	harness.RequireEtcd(t)
	t.Parallel()
	const a = "127.0.1.114"
	port, _ := harness.StartBackends(t, a)
	etcd := harness.StartEtcd(t)
	put(t, etcd.Client(t), "/healthdns/wait.lan/"+a, "")
	etcd.Stop()
	s := harness.Start(t, ".:{{PORT}} {\n bind 127.0.0.1\n ready {{READY}}\n"+etcdPool("wait.lan", etcd.Endpoint(), port, "all_down servfail")+"}\n")
	if harness.HTTPOK("http://" + s.ReadyAddr + "/ready") {
		t.Error("ready before the first list")
	}
	if r := s.Query(t, "udp", "wait.lan.", dns.TypeA); r.Rcode != dns.RcodeServerFailure {
		t.Errorf("before the first list: %s, want SERVFAIL (all_down servfail)", dns.RcodeToString[r.Rcode])
	}
	etcd.Start()
	harness.Eventually(t, 15*time.Second, func() bool { return harness.HTTPOK("http://" + s.ReadyAddr + "/ready") }, "ready once etcd is up")
	if got := s.Addrs(t, "udp", "wait.lan.", dns.TypeA); !harness.SameSet(got, a) {
		t.Errorf("once ready: %v, want %s", got, a)
	}
}

// TestFleetAgreesOnGroup: three servers under nopreempt share one etcd prefix, and see the
// primary differently (servers 2 and 3 check a port it does not listen on, as if a firewall stood
// between them and it). Each would answer from the group it sees; agreed through etcd they all
// answer from one group: the standby, which every server can reach. A fail-back written to etcd
// moves them all to the primary once all of them see it healthy, and a primary that only server
// 1 sees fail moves the whole fleet back to the standby.
func TestFleetAgreesOnGroup(t *testing.T) {
	harness.RequireEtcd(t)
	t.Parallel()
	const primary, standby = "127.0.1.120", "127.0.1.121"
	const prefix = "/healthdns/fleet.lan/"
	seenPort := harness.FreePort(t, primary, standby)    // server 1's check: both listen on it
	blockedPort := harness.FreePort(t, primary, standby) // servers 2 and 3's: only the standby
	primarySeen := harness.StartBackend(t, primary, seenPort)
	harness.StartBackend(t, standby, seenPort)
	harness.StartBackend(t, standby, blockedPort)
	etcd := harness.StartEtcd(t)
	kv := etcd.Client(t)
	put(t, kv, prefix+primary, "priority 200")
	put(t, kv, prefix+standby, "priority 100")

	// Server 1 has a status listener, for an operator's fail-back through its API.
	statusAddr := "127.0.0.1:" + strconv.Itoa(harness.FreePort(t))
	const token = "fleet-s3cret-0123456789"
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var servers []*harness.Server
	for i, port := range []int{seenPort, blockedPort, blockedPort} {
		// fleet_quorum any: one server's view moves the fleet (TestFleetQuorum has the quorum).
		extra := []string{"nopreempt", "fleet_quorum any"}
		if i == 0 {
			extra = append(extra, "status "+statusAddr+" token "+tokenFile)
		}
		servers = append(servers, harness.Start(t, ".:{{PORT}} {\n bind 127.0.0.1\n"+
			etcdPool("fleet.lan", etcd.Endpoint(), port, extra...)+"}\n"))
	}
	allAnswer := func(what, ip string) {
		t.Helper()
		start := time.Now()
		for i, s := range servers {
			harness.Eventually(t, 10*time.Second, func() bool {
				return harness.SameSet(s.Addrs(t, "udp", "fleet.lan.", dns.TypeA), ip)
			}, "server ", i+1, " to answer ", ip, ": ", what)
		}
		t.Logf("%s: every server answers %s after %s", what, ip, time.Since(start).Round(time.Millisecond))
		// And stays there: no server drifts back to what it sees alone.
		deadline := time.Now().Add(2 * time.Second)
		for time.Now().Before(deadline) {
			for i, s := range servers {
				if got := s.Addrs(t, "udp", "fleet.lan.", dns.TypeA); !harness.SameSet(got, ip) {
					t.Fatalf("%s: server %d answers %v, want %s with the fleet", what, i+1, got, ip)
				}
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	agreed := func() string {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		r, err := kv.Get(ctx, prefix+"_group/ipv4")
		if err != nil || len(r.Kvs) == 0 {
			return ""
		}
		return string(r.Kvs[0].Value)
	}

	allAnswer("servers 2 and 3 cannot reach the primary", standby)
	if g := agreed(); g != "100" {
		t.Errorf("agreed group %q in etcd, want 100", g)
	}

	// The primary becomes reachable from everywhere: under nopreempt nobody moves by himself.
	harness.StartBackend(t, primary, blockedPort)
	allAnswer("the primary reachable again (nopreempt)", standby)

	// The operator's fail-back, written to etcd.
	put(t, kv, prefix+"_group/ipv4", "200")
	allAnswer("fail-back written to etcd", primary)

	// Only server 1 sees the primary fail: the whole fleet moves to the standby.
	primarySeen.Stop()
	allAnswer("the primary failing as server 1 sees it", standby)
	if g := agreed(); g != "100" {
		t.Errorf("agreed group %q in etcd after server 1's switch, want 100", g)
	}
	if lines := harness.LinesMatching(servers[1].Output(), regexp.MustCompile(`now served by priority group 100 \(was 200\): agreed by the fleet`)); len(lines) == 0 {
		t.Errorf("server 2 does not log that it followed the fleet:\n%s", servers[1].Output())
	}

	// The primary is back for server 1 too; under nopreempt the fleet stays on the standby until
	// an operator fails back through server 1's status API, which the whole fleet then follows.
	primarySeen.Start()
	allAnswer("the primary back (nopreempt)", standby)
	api := &apiClient{base: "http://" + statusAddr, token: token, http: &http.Client{Timeout: 5 * time.Second}}
	if code, body, _ := api.post(t, "/api/v1/failback", token, `{"zone":"fleet.lan"}`); code != http.StatusOK {
		t.Fatalf("fail-back through the status API: %d %s", code, body)
	}
	allAnswer("fail-back through server 1's status API", primary)
	if g := agreed(); g != "200" {
		t.Errorf("agreed group %q in etcd after the API's fail-back, want 200", g)
	}

	// Cut off from etcd, every server keeps the agreed group, and says so.
	etcd.Stop()
	for i, s := range servers {
		harness.Eventually(t, 10*time.Second, func() bool { return strings.Contains(s.Output(), "cut off from etcd") }, "server ", i+1, " to log the cut")
	}
	allAnswer("etcd away", primary)
}

// TestBackendsEtcdReloadWhileDown: a Corefile reload while etcd is away keeps the last list: the
// new configuration answers from it and stays ready, rather than waiting for etcd as a fresh
// start does.
func TestBackendsEtcdReloadWhileDown(t *testing.T) {
	harness.RequireEtcd(t)
	t.Parallel()
	const a = "127.0.1.115"
	port, _ := harness.StartBackends(t, a)
	etcd := harness.StartEtcd(t)
	put(t, etcd.Client(t), "/healthdns/kept.lan/"+a, "")
	conf := func(ttl int) string {
		return ".:{{PORT}} {\n bind 127.0.0.1\n ready {{READY}}\n" +
			etcdPool("kept.lan", etcd.Endpoint(), port, "all_down servfail", fmt.Sprintf("ttl %d", ttl)) + "}\n"
	}
	s := harness.Start(t, conf(5))
	harness.Eventually(t, 10*time.Second, func() bool { return harness.SameSet(s.Addrs(t, "udp", "kept.lan.", dns.TypeA), a) }, "the list served")
	etcd.Stop()
	if err := s.Reload(t, conf(7)); err != nil {
		t.Fatal(err)
	}
	r := s.Query(t, "udp", "kept.lan.", dns.TypeA)
	if r.Rcode != dns.RcodeSuccess || !harness.SameSet(harness.AnswerAddrs(r), a) || r.Answer[0].Header().Ttl != 7 {
		t.Errorf("after a reload with etcd away: %v, want %s with the new ttl 7", r, a)
	}
	if !harness.HTTPOK("http://" + s.ReadyAddr + "/ready") {
		t.Error("not ready after a reload with etcd away, though the last list serves")
	}
}

// TestEtcdRestartsKeepGoroutines: etcd stopped and started again, over and over, leaves the
// server with the goroutines it had. The adversarial trial saw four stay for each restart (34 to
// 99 after 15), the etcd client's streams of watches given up while they reconnected.
func TestEtcdRestartsKeepGoroutines(t *testing.T) {
	harness.RequireEtcd(t)
	t.Parallel()
	const (
		a, b     = "127.0.11.1", "127.0.11.2"
		prefix   = "/healthdns/restarts.lan/"
		restarts = 6
		slack    = 3 // a probe or a reconnection under way; a restart used to leave four for good
	)
	port, _ := harness.StartBackends(t, a, b)
	etcd := harness.StartEtcd(t)
	kv := etcd.Client(t)
	put(t, kv, prefix+a, "")
	s := harness.Start(t, ".:{{PORT}} {\n bind 127.0.0.1\n prometheus {{METRICS}}\n"+etcdPool("restarts.lan", etcd.Endpoint(), port)+"}\n")
	serves := func(ip string) bool { return harness.SameSet(s.Addrs(t, "udp", "restarts.lan.", dns.TypeA), ip) }
	harness.Eventually(t, 10*time.Second, func() bool { return serves(a) }, "the first list")
	connected := func() float64 {
		v, _ := s.Scrape(t).Value("coredns_healthdns_source_connected", map[string]string{"zone": "restarts.lan", "source": "etcd"})
		return v
	}
	before := goroutines(t, s)
	for i := 1; i <= restarts; i++ {
		etcd.Stop()
		harness.Eventually(t, 15*time.Second, func() bool { return connected() == 0 }, "restart ", i, ": the outage seen")
		etcd.Start()
		harness.Eventually(t, 15*time.Second, func() bool { return connected() == 1 }, "restart ", i, ": etcd seen back")
		// A change served says the watch of this restart runs.
		serving, drained := a, b
		if i%2 == 1 {
			serving, drained = b, a
		}
		put(t, kv, prefix+serving, "")
		put(t, kv, prefix+drained, "drain restarts")
		harness.Eventually(t, 15*time.Second, func() bool { return serves(serving) }, "restart ", i, ": the change after it served")
	}
	var after float64
	if !harness.Poll(15*time.Second, 100*time.Millisecond, func() bool {
		after = goroutines(t, s)
		return after <= before+slack
	}) {
		t.Fatalf("go_goroutines: %v before %d restarts of etcd, %v after; want at most %d more", before, restarts, after, slack)
	}
	t.Logf("go_goroutines: %v before %d restarts of etcd, %v after", before, restarts, after)
}
