package healthdns

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/coredns/caddy"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"go.uber.org/goleak"

	"github.com/healthdns/healthdns/balance"
	"github.com/healthdns/healthdns/health"
)

func writeToken(t *testing.T, text string) string {
	t.Helper()
	file := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(file, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return file
}

func TestParseStatus(t *testing.T) {
	token := writeToken(t, "s3cret\nignored\n")
	for _, tc := range []struct {
		line      string
		addr, tok string
	}{
		{"status", "127.0.0.1:8053", ""},
		{"status 127.0.0.2:9000", "127.0.0.2:9000", ""},
		{"status [::1]:9000", "[::1]:9000", ""},
		{"status localhost:9000", "localhost:9000", ""},
		{"status token " + token, "127.0.0.1:8053", "s3cret"},
		{"status 0.0.0.0:8053 token " + token, "0.0.0.0:8053", "s3cret"},
		{"status :8053 token " + token, ":8053", "s3cret"},
	} {
		cfgs, err := parse(caddy.NewTestController("dns", "healthdns app.lan {\n backend 10.0.0.1\n "+tc.line+"\n}"))
		if err != nil {
			t.Errorf("%s: %v", tc.line, err)
			continue
		}
		if st := cfgs[0].status; st.addr != tc.addr || st.token != tc.tok || st.line != 3 {
			t.Errorf("%s: %+v, want address %s, token %q, line 3", tc.line, st, tc.addr, tc.tok)
		}
	}
	cfgs, _ := parse(caddy.NewTestController("dns", "healthdns app.lan {\n backend 10.0.0.1\n}"))
	if cfgs[0].status.addr != "" {
		t.Errorf("status without the directive: %+v; want off", cfgs[0].status)
	}
}

func TestParseStatusErrors(t *testing.T) {
	empty := writeToken(t, "\n")
	token := writeToken(t, "s3cret")
	missing := filepath.Join(t.TempDir(), "nothing")
	for _, tc := range []struct{ name, line, want string }{
		{"no port", "status 127.0.0.1", "invalid status address '127.0.0.1': want HOST:PORT"},
		{"bad port", "status 127.0.0.1:http", "port 'http' is not a number"},
		{"port 0", "status 127.0.0.1:0", "port '0' is not a number from 1 to 65535"},
		{"host name", "status status.lan:8053", "host 'status.lan' is not an IP address or localhost"},
		{"non-loopback without token", "status 0.0.0.0:8053", "status on 0.0.0.0:8053 is reachable from other hosts"},
		{"every address without token", "status :8053", "want 'status :8053 token FILE'"},
		{"a LAN address without token", "status 10.0.0.53:8053", "reachable from other hosts"},
		{"unreadable token", "status token " + missing, "status token: open " + missing},
		{"empty token", "status token " + empty, "the first line is empty"},
		{"token without file", "status 127.0.0.1:8053 token", "'token' wants one FILE"},
		{"unknown option", "status 127.0.0.1:8053 user admin", "unknown status option 'user'"},
		{"twice", "status\n status 127.0.0.1:9000 token " + token, "duplicate 'status' (first on line 3)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parse(caddy.NewTestController("dns", "healthdns app.lan {\n backend 10.0.0.1\n "+tc.line+"\n}"))
			if err == nil {
				t.Fatal("no error")
			}
			if !strings.Contains(err.Error(), tc.want) || !strings.HasPrefix(err.Error(), "Testfile:") {
				t.Errorf("error %q, want one at its line containing %q", err, tc.want)
			}
		})
	}
}

// Two pools of one instance share a listener, and so its token.
func TestStatusTokensMustAgree(t *testing.T) {
	token := writeToken(t, "s3cret")
	in := fmt.Sprintf("healthdns a.lan {\n backend 10.0.0.1\n check tcp 80\n status 127.0.0.1:8053 token %s\n}\nhealthdns b.lan {\n backend 10.0.0.2\n check tcp 80\n status\n}", token)
	err := setupWith(caddy.NewTestController("dns", in), func() (bool, error) { return true, nil })
	if err == nil || !strings.Contains(err.Error(), "status 127.0.0.1:8053: token differs from the one of Testfile:4") {
		t.Fatalf("error %v, want the token conflict", err)
	}
}

// statusPools starts pools on a registry whose probes pass, except for the addresses in down.
func statusPools(t *testing.T, down map[string]bool, cfgs ...poolConfig) []*Pool {
	t.Helper()
	reg := health.NewRegistry(observer{}, health.WithProbe(func(_ context.Context, a netip.Addr) error {
		if down[a.String()] {
			return fmt.Errorf("tcp :80: %w", syscall.ECONNREFUSED)
		}
		return nil
	}))
	var pools []*Pool
	for _, cfg := range cfgs {
		cfg.server = "dns://127.0.0.1:1053"
		policy, _ := balance.New(cfg.policy)
		p := newPool(cfg, policy, reg)
		p.start()
		t.Cleanup(p.stop)
		pools = append(pools, p)
	}
	deadline := time.After(10 * time.Second)
	for _, p := range pools {
		if !p.waitChecked(deadline) {
			t.Fatal("no first verdicts in 10s")
		}
	}
	return pools
}

// The document says, for each backend, its state, since when, and why it is down; for each
// pool, its settings and the state of each family; and whether a probe loop stalled.
func TestStatusDocument(t *testing.T) {
	cfg := testConfig("app.lan.", "10.0.0.1", "10.0.0.2", "2001:db8::1")
	cfg.backends[1].weight = 3
	pools := statusPools(t, map[string]bool{"10.0.0.2": true, "2001:db8::1": true}, cfg)
	now := time.Now()
	tick := now.Add(-time.Minute)
	v := &statusView{pools: pools, loops: func() []health.LoopStatus {
		return []health.LoopStatus{
			{Wire: "tcp_syn", Running: true, Targets: 3, Interval: time.Second, LastTick: now, Wakes: 10},
			{Wire: "blocking", Running: true, Targets: 1, Interval: time.Second, LastTick: tick, Stalled: true},
		}
	}}
	raw, err := json.Marshal(v.document(now))
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Version   int
		HealthDNS struct {
			Version    string
			ConfigHash string `json:"config_hash"`
		}
		Checker struct {
			Stalled bool
			Loops   []struct {
				Wire    string
				Stalled bool
				Age     float64 `json:"last_tick_age_seconds"`
			}
		}
		Pools []struct {
			Zone, Policy string
			Checks       []struct{ Check, Kind string }
			Families     []struct {
				Family         string
				Configured, Up int
				Down           bool
			}
			Backends []struct {
				Address, Family, State, Reason, Error string
				Weight                                uint32
				Since                                 *time.Time
				Checks                                []struct {
					Check       string
					Failures    int
					LastFailure *struct{ Reason, Error string } `json:"last_failure"`
					History     []struct {
						State, Reason string
						First         bool
					}
				}
			}
		}
	}
	if err := json.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	if doc.Version != 1 || doc.HealthDNS.ConfigHash == "" || len(doc.Pools) != 1 {
		t.Fatalf("document %s", raw)
	}
	if !doc.Checker.Stalled || len(doc.Checker.Loops) != 2 || doc.Checker.Loops[0].Stalled || !doc.Checker.Loops[1].Stalled || doc.Checker.Loops[1].Age != 60 {
		t.Errorf("checker %+v: want the blocking loop stalled, a minute since its last tick", doc.Checker)
	}
	p := doc.Pools[0]
	if p.Zone != "app.lan." || p.Policy != "round_robin" || len(p.Checks) != 1 || p.Checks[0].Check != "tcp :80" || p.Checks[0].Kind != "tcp" {
		t.Errorf("pool %+v", p)
	}
	if len(p.Families) != 2 || p.Families[0].Family != "ipv4" || p.Families[0].Up != 1 || p.Families[0].Configured != 2 || p.Families[0].Down ||
		p.Families[1].Family != "ipv6" || !p.Families[1].Down {
		t.Errorf("families %+v", p.Families)
	}
	if len(p.Backends) != 3 {
		t.Fatalf("backends %+v", p.Backends)
	}
	up, down := p.Backends[0], p.Backends[1]
	if up.Address != "10.0.0.1" || up.State != "up" || up.Reason != "" || up.Since == nil || up.Family != "ipv4" || up.Weight != 1 {
		t.Errorf("the live backend %+v", up)
	}
	if down.Address != "10.0.0.2" || down.State != "down" || down.Reason != "refused" || !strings.Contains(down.Error, "connection refused") || down.Weight != 3 {
		t.Errorf("the refused backend %+v", down)
	}
	c := down.Checks[0]
	if c.Check != "tcp :80" || c.Failures < 1 || c.LastFailure == nil || c.LastFailure.Reason != "refused" ||
		len(c.History) != 1 || !c.History[0].First || c.History[0].State != "down" || c.History[0].Reason != "refused" {
		t.Errorf("the refused backend's check %+v", c)
	}
	if p.Backends[2].Family != "ipv6" {
		t.Errorf("backend %+v", p.Backends[2])
	}
}

// A backend with several checks is down for its first failing check's reason, up only while
// every check is up.
func TestStatusBackendOfSeveralChecks(t *testing.T) {
	cfg := testConfig("two.lan.", "10.0.0.1")
	cfg.checks = append(cfg.checks, health.Check{Kind: health.HTTP, Port: 8080, Path: "/healthz"})
	pools := statusPools(t, map[string]bool{"10.0.0.1": true}, cfg)
	doc := (&statusView{pools: pools}).document(time.Now())
	b := doc.Pools[0].Backends[0]
	if b.State != "down" || len(b.Checks) != 2 || b.Checks[0].Check != "tcp :80" || b.Checks[1].Check != "http :8080/healthz" || b.Reason != "refused" || b.Since == nil {
		t.Errorf("backend %+v", b)
	}
}

func TestStatusHTTP(t *testing.T) {
	pools := statusPools(t, map[string]bool{"10.0.0.2": true}, testConfig("app.lan.", "10.0.0.1", "10.0.0.2"))
	for _, tc := range []struct {
		name, token, auth, method, path string
		code                            int
		has                             string
	}{
		{"json", "", "", "GET", "/status.json", 200, `"version": 1`},
		{"page with the data inlined", "", "", "GET", "/", 200, `"address":"10.0.0.2"`},
		{"json without the token", "s3cret", "", "GET", "/status.json", 401, "Bearer"},
		{"json with a wrong token", "s3cret", "Bearer s3cre", "GET", "/status.json", 401, "Bearer"},
		{"json with the token", "s3cret", "Bearer s3cret", "GET", "/status.json", 200, `"reason": "refused"`},
		{"page without the token: no data", "s3cret", "", "GET", "/", 200, `<script id="initial" type="application/json">null</script>`},
		{"read only", "", "", "POST", "/status.json", 405, "read only"},
		{"other paths", "", "", "GET", "/metrics", 404, "not found"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := &statusView{statusConfig: statusConfig{token: tc.token}, pools: pools}
			r := httptest.NewRequest(tc.method, tc.path, nil)
			if tc.auth != "" {
				r.Header.Set("Authorization", tc.auth)
			}
			w := httptest.NewRecorder()
			v.ServeHTTP(w, r)
			if w.Code != tc.code || !strings.Contains(w.Body.String(), tc.has) {
				t.Errorf("%s %s: %d %q; want %d with %q", tc.method, tc.path, w.Code, w.Body.String(), tc.code, tc.has)
			}
		})
	}
	// The page is self-contained: nothing loads from elsewhere.
	for _, ref := range []string{"http://", "https://", "//cdn", "@import", "<link"} {
		if strings.Contains(statusPage, ref) {
			t.Errorf("the page refers to %q", ref)
		}
	}
}

// get fetches url with c and says whether the connection was one used before.
func get(t *testing.T, c *http.Client, url string) (code int, body string, reused bool, err error) {
	t.Helper()
	trace := &httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) { reused = i.Reused }}
	req, _ := http.NewRequestWithContext(httptrace.WithClientTrace(context.Background(), trace), "GET", url, nil)
	resp, err := c.Do(req)
	if err != nil {
		return 0, "", false, err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), reused, nil
}

func freeTCPPort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// The listener outlives a reload: the new instance registers before the old one lets go, so a
// client's kept-alive connection carries on, and it serves the new configuration. A reload that
// fails gives back the listener it opened; shutdown closes them all.
func TestStatusListenerAcrossReloads(t *testing.T) {
	ignore := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, ignore) })

	port := listenTCP(t, 0, "127.0.0.1")
	dnsPort := freeUDPPort(t)
	statusPort := freeTCPPort(t)
	url := "http://127.0.0.1:" + strconv.Itoa(statusPort) + "/status.json"
	pool := func(zone, status string) string {
		return fmt.Sprintf("healthdns %s {\n backend 127.0.0.1\n check tcp %d\n interval 100ms\n timeout 50ms\n %s\n }", zone, port, status)
	}
	status := "status 127.0.0.1:" + strconv.Itoa(statusPort)

	inst, err := caddy.Start(corefile(dnsPort, pool("app.lan", status)))
	if err != nil {
		t.Fatal(err)
	}
	awaitServing(t, dnsPort)
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1}, Timeout: 5 * time.Second}
	defer client.CloseIdleConnections()
	code, body, _, err := get(t, client, url)
	if err != nil || code != 200 || !strings.Contains(body, `"zone": "app.lan."`) {
		t.Fatalf("before the reload: %d %v %s", code, err, body)
	}

	inst, err = inst.Restart(corefile(dnsPort, pool("www.lan", status)))
	if err != nil {
		t.Fatal(err)
	}
	awaitServing(t, dnsPort)
	code, body, reused, err := get(t, client, url)
	if err != nil || code != 200 || !strings.Contains(body, `"zone": "www.lan."`) || strings.Contains(body, "app.lan.") {
		t.Fatalf("after the reload: %d %v %s; want the new instance's pool alone", code, err, body)
	}
	if !reused {
		t.Error("the reload closed the status listener's connection: the listener was opened again")
	}

	// A reload that opens a second listener and then fails (a busy DNS port) closes it again.
	other := freeTCPPort(t)
	busy := listenTCP(t, 0, "127.0.0.1")
	bad := corefile(dnsPort, pool("www.lan", status)+"\n"+pool("other.lan", "status 127.0.0.1:"+strconv.Itoa(other))).(caddy.CaddyfileInput)
	bad.Contents = append(bad.Contents, fmt.Sprintf("tcp://.:%d {\n bind 127.0.0.1\n whoami\n}\n", busy)...)
	if _, err := inst.Restart(bad); err == nil {
		t.Fatal("reload onto a busy port succeeded")
	}
	if ln, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(other)); err != nil {
		t.Errorf("the failed reload kept its status listener: %v", err)
	} else {
		ln.Close()
	}
	if code, body, _, err := get(t, client, url); err != nil || code != 200 || !strings.Contains(body, "www.lan.") {
		t.Errorf("after the failed reload: %d %v %s; want the running instance's page", code, err, body)
	}

	if errs := inst.ShutdownCallbacks(); len(errs) != 0 {
		t.Fatal(errs)
	}
	inst.Stop()
	inst.Wait()
	client.CloseIdleConnections()
	if _, _, _, err := get(t, client, url); err == nil {
		t.Error("the status listener answers after shutdown")
	}
}

// The checker's last tick is exported per running loop, at scrape time, and goes with the loop.
func TestCheckerLastTickMetric(t *testing.T) {
	reg := health.NewRegistry(observer{}, health.WithProbe(func(context.Context, netip.Addr) error { return nil }))
	c := checkerCollector{reg}
	if n := testutil.CollectAndCount(c); n != 0 {
		t.Fatalf("%d series before any loop runs", n)
	}
	l := reg.Acquire(health.Target{Addr: netip.MustParseAddr("192.0.2.7"), Spec: health.Spec{Check: health.Check{Kind: health.TCP, Port: 80}, Interval: time.Hour, Timeout: time.Second, Rise: 1, Fall: 1}}, "tick.lan.")
	<-l.Checked()
	if problems, err := testutil.CollectAndLint(c); err != nil || len(problems) != 0 {
		t.Errorf("lint: %v %v", problems, err)
	}
	ch := make(chan prometheus.Metric, 4)
	c.Collect(ch)
	close(ch)
	var got []string
	for m := range ch {
		var d dto.Metric
		m.Write(&d)
		ts := time.Unix(0, int64(d.GetGauge().GetValue()*1e9))
		if age := time.Since(ts); age < -time.Second || age > time.Minute {
			t.Errorf("last tick %v, %v ago", ts, age)
		}
		got = append(got, d.GetLabel()[0].GetName()+"="+d.GetLabel()[0].GetValue())
	}
	if strings.Join(got, ",") != "wire=blocking" {
		t.Errorf("series %v, want one of the blocking wire", got)
	}
	l.Release()
	if n := testutil.CollectAndCount(c); n != 0 {
		t.Errorf("%d series after the loop stopped", n)
	}
}

// A family's priority groups are a JSON array of numbers, which the page lists: []uint8 would
// be written as base64, and the page's script would stop at it.
func TestStatusFamilyPrioritiesJSON(t *testing.T) {
	var g balance.Groups
	g.Add(100)
	g.Add(200)
	b, err := json.Marshal(statusFamily{Family: "ipv4", ServingPriority: 200, Priorities: priorities(g)})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `"serving_priority":200,"priorities":[200,100]`) {
		t.Errorf("family JSON %s, want the groups as numbers, highest first", b)
	}
}

// groupsView is a listener of two pools an operator of priority groups watches: db.lan under
// nopreempt, served by its standby after the primary died and came back; web.lan under
// preempt_delay, whose primary is back and waits out its delay, with a drained backend, a dead
// one, and a tcp and an https check (host, tls_insecure). Its probes pass except for the
// switchboard's dead addresses.
func groupsView(t *testing.T, token string) *statusView {
	t.Helper()
	sw := &switchboard{dead: map[netip.Addr]bool{netip.MustParseAddr("10.0.1.4"): true}}
	reg := health.NewRegistry(observer{}, health.WithProbe(sw.probe))
	// Fall 5: a probe late on a busy machine must not empty a standby group, which would hand
	// web.lan back to its primary at once and end the wait the tests look at.
	fast := health.Spec{Interval: 50 * time.Millisecond, Timeout: 45 * time.Millisecond, Rise: 2, Fall: 5}

	db := testConfig("db.lan.", "10.0.0.1", "10.0.0.2")
	db.backends[0].priority = 200
	db.preempt = balance.Preemption{Never: true}
	web := testConfig("web.lan.", "10.0.1.1", "10.0.1.2", "10.0.1.3", "10.0.1.4", "2001:db8:aaaa:bbbb:cccc:dddd:eeee:101")
	web.backends[0].priority, web.backends[0].weight = 200, 3
	web.backends[1].weight = 2
	web.backends[2].drain = drain{on: true, reason: "kernel upgrade"}
	web.preempt = balance.Preemption{Delay: time.Hour}
	web.policy = "weighted"
	web.checks = []health.Check{{Kind: health.TCP, Port: 8080}, {Kind: health.HTTPS, Port: 443, Path: "/healthz", Host: "web.lan", TLSInsecure: true, Body: "ok", BodyExact: true}}
	var pools []*Pool
	for _, cfg := range []poolConfig{db, web} {
		cfg.server, cfg.spec = "dns://127.0.0.1:1053", fast
		policy, err := balance.New(cfg.policy)
		if err != nil {
			t.Fatal(err)
		}
		p := newPool(cfg, policy, reg)
		t.Cleanup(p.stop)
		pools = append(pools, p)
	}
	startPools(pools)
	waitServing(t, pools[0], "10.0.0.1", "db.lan at start")
	waitServing(t, pools[1], "10.0.1.1", "web.lan at start")
	sw.set("10.0.0.1", true)
	sw.set("10.0.1.1", true)
	waitServing(t, pools[0], "10.0.0.2", "db.lan with its primary dead")
	waitServing(t, pools[1], "10.0.1.2", "web.lan with its primary dead")
	sw.set("10.0.0.1", false)
	sw.set("10.0.1.1", false)
	waitHealthyGroups(t, pools[0], 200, 100)
	waitHealthyGroups(t, pools[1], 200, 100)
	answersTotal.WithLabelValues("dns://127.0.0.1:1053", "web.lan.", "10.0.1.2").Inc()
	t.Cleanup(func() { answersTotal.DeleteLabelValues("dns://127.0.0.1:1053", "web.lan.", "10.0.1.2") })
	return &statusView{statusConfig: statusConfig{token: token}, pools: pools, loops: func() []health.LoopStatus { return nil }}
}

// A family says which groups are healthy and, during a preempt_delay wait, which group takes
// back and when; under nopreempt nothing waits, and a healthy group above the serving one is
// left to an operator's fail-back.
func TestStatusFamilyPreemptWait(t *testing.T) {
	v := groupsView(t, "")
	for i, wait := range []bool{false, true} { // db.lan under nopreempt, web.lan under preempt_delay 1h
		p := v.pools[i]
		raw, err := json.Marshal(p.status(nil).Families[0])
		if err != nil {
			t.Fatal(err)
		}
		var f struct {
			ServingPriority   int   `json:"serving_priority"`
			HealthyPriorities []int `json:"healthy_priorities"`
			PreemptWait       *struct {
				Group int
				Until time.Time
			} `json:"preempt_wait"`
		}
		if err := json.Unmarshal(raw, &f); err != nil {
			t.Fatal(err)
		}
		if f.ServingPriority != 100 || !slices.Equal(f.HealthyPriorities, []int{200, 100}) {
			t.Errorf("%s: %s; want group 100 serving, 200 and 100 healthy", p.cfg.zone, raw)
		}
		switch w := f.PreemptWait; {
		case !wait && w != nil:
			t.Errorf("%s: %s; nopreempt waits for nothing", p.cfg.zone, raw)
		case wait && (w == nil || w.Group != 200 || w.Until.Before(time.Now().Add(59*time.Minute)) || w.Until.After(time.Now().Add(time.Hour))):
			t.Errorf("%s: %s; want group 200 waiting for about an hour", p.cfg.zone, raw)
		}
	}
}

// waitHealthyGroups waits until the pool's ipv4 failover has heard that want are healthy: a
// backend's monitor says up a moment before the pool's rebuild tells the failover.
func waitHealthyGroups(t *testing.T, p *Pool, want ...int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for got := p.status(nil).Families[0].HealthyPriorities; !slices.Equal(got, want); got = p.status(nil).Families[0].HealthyPriorities {
		if time.Now().After(deadline) {
			t.Fatalf("zone %s: healthy groups %v after 10s, want %v", p.cfg.zone, got, want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
