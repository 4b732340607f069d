package status

import (
	"encoding/json"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/healthdns/healthdns/balance"
	"github.com/healthdns/healthdns/health"
	"github.com/healthdns/healthdns/pool"
	"github.com/healthdns/healthdns/test/testkit"
)

// The document says, for each backend, its state, since when, and why it is down; for each
// pool, its settings and the state of each family; and whether a probe loop stalled.
func TestStatusDocument(t *testing.T) {
	cfg := testConfig("app.lan.", "10.0.0.1", "10.0.0.2", "2001:db8::1")
	cfg.Backends[1].Weight = 3
	pools := statusPools(t, map[string]bool{"10.0.0.2": true, "2001:db8::1": true}, cfg)
	now := time.Now()
	tick := now.Add(-time.Minute)
	v := &View{Pools: shown(pools...), Loops: func() []health.LoopStatus {
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
	cfg.Checks = append(cfg.Checks, health.Check{Kind: health.HTTP, Port: 8080, Path: "/healthz"})
	pools := statusPools(t, map[string]bool{"10.0.0.1": true}, cfg)
	doc := (&View{Pools: shown(pools...)}).document(time.Now())
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
			v := &View{Config: Config{Token: tc.token}, Pools: shown(pools...)}
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
		if strings.Contains(page, ref) {
			t.Errorf("the page refers to %q", ref)
		}
	}
}

// A family's priority groups are a JSON array of numbers, which the page lists: []uint8 would
// be written as base64, and the page's script would stop at it.
func TestStatusFamilyPrioritiesJSON(t *testing.T) {
	var g balance.Groups
	g.Add(100)
	g.Add(200)
	b, err := json.Marshal(FamilyDoc{Family: "ipv4", ServingPriority: 200, Priorities: priorities(g)})
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
func groupsView(t *testing.T, token string) *View {
	t.Helper()
	sw := testkit.NewSwitchboard("10.0.1.4")
	r := newRunning(sw.Probe)
	// Fall 5: a probe late on a busy machine must not empty a standby group, which would hand
	// web.lan back to its primary at once and end the wait the tests look at.
	fast := health.Spec{Interval: 50 * time.Millisecond, Timeout: 45 * time.Millisecond, Rise: 2, Fall: 5}

	db := testConfig("db.lan.", "10.0.0.1", "10.0.0.2")
	db.Backends[0].Priority = 200
	db.Preempt = balance.Preemption{Never: true}
	web := testConfig("web.lan.", "10.0.1.1", "10.0.1.2", "10.0.1.3", "10.0.1.4", "2001:db8:aaaa:bbbb:cccc:dddd:eeee:101")
	web.Backends[0].Priority, web.Backends[0].Weight = 200, 3
	web.Backends[1].Weight = 2
	web.Backends[2].Drain = pool.Drain{On: true, Reason: "kernel upgrade"}
	web.Preempt = balance.Preemption{Delay: time.Hour}
	web.Policy = "weighted"
	web.Checks = []health.Check{{Kind: health.TCP, Port: 8080}, {Kind: health.HTTPS, Port: 443, Path: "/healthz", Host: "web.lan", TLSInsecure: true, Body: "ok", BodyExact: true}}
	var pools []*pool.Pool
	for _, cfg := range []pool.Config{db, web} {
		cfg.Server, cfg.Spec = "dns://127.0.0.1:1053", fast
		pools = append(pools, r.start(t, cfg))
	}
	waitServing(t, pools[0], "10.0.0.1", "db.lan at start")
	waitServing(t, pools[1], "10.0.1.1", "web.lan at start")
	sw.Set("10.0.0.1", true)
	sw.Set("10.0.1.1", true)
	waitServing(t, pools[0], "10.0.0.2", "db.lan with its primary dead")
	waitServing(t, pools[1], "10.0.1.2", "web.lan with its primary dead")
	sw.Set("10.0.0.1", false)
	sw.Set("10.0.1.1", false)
	waitHealthyGroups(t, pools[0], 200, 100)
	waitHealthyGroups(t, pools[1], 200, 100)
	r.metrics.AnswersTotal.WithLabelValues("dns://127.0.0.1:1053", "web.lan.", "10.0.1.2").Inc()
	return &View{Config: Config{Token: token}, Pools: shown(pools...), Loops: func() []health.LoopStatus { return nil }}
}

// A family says which groups are healthy and, during a preempt_delay wait, which group takes
// back and when; under nopreempt nothing waits, and a healthy group above the serving one is
// left to an operator's fail-back.
func TestStatusFamilyPreemptWait(t *testing.T) {
	v := groupsView(t, "")
	for i, wait := range []bool{false, true} { // db.lan under nopreempt, web.lan under preempt_delay 1h
		p := v.Pools[i]
		raw, err := json.Marshal(poolDoc(p, p.Pool.Status()).Families[0])
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
			t.Errorf("%s: %s; want group 100 serving, 200 and 100 healthy", p.Pool.Zone(), raw)
		}
		switch w := f.PreemptWait; {
		case !wait && w != nil:
			t.Errorf("%s: %s; nopreempt waits for nothing", p.Pool.Zone(), raw)
		case wait && (w == nil || w.Group != 200 || w.Until.Before(time.Now().Add(59*time.Minute)) || w.Until.After(time.Now().Add(time.Hour))):
			t.Errorf("%s: %s; want group 200 waiting for about an hour", p.Pool.Zone(), raw)
		}
	}
}

// waitHealthyGroups waits until the pool's ipv4 failover has heard that want are healthy: a
// backend's monitor says up a moment before the pool's rebuild tells the failover.
func waitHealthyGroups(t *testing.T, p *pool.Pool, want ...int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for got := docOf(p).Families[0].HealthyPriorities; !slices.Equal(got, want); got = docOf(p).Families[0].HealthyPriorities {
		if time.Now().After(deadline) {
			t.Fatalf("zone %s: healthy groups %v after 10s, want %v", cfgOf(p).Zone, got, want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
