package status

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/healthdns/healthdns/balance"
	"github.com/healthdns/healthdns/health"
	"github.com/healthdns/healthdns/pool"
)

// fakePool is a pool as the status surface sees it, with a view the test writes and a record of
// the writes it was asked for: the surface is tested apart from any pool's behaviour.
type fakePool struct {
	server, zone string
	view         pool.Status
	refuse       error // every write's answer
	writes       []string
}

func (f *fakePool) Server() string      { return f.server }
func (f *fakePool) Zone() string        { return f.zone }
func (f *fakePool) Status() pool.Status { return f.view }

func (f *fakePool) Drain(addr netip.Addr, d pool.Drain, by string) error {
	f.writes = append(f.writes, fmt.Sprintf("drain %s until %s reason %q by %s", addr, d.Until.Format(time.RFC3339), d.Reason, by))
	return f.refuse
}

func (f *fakePool) Undrain(addr netip.Addr, by string) error {
	f.writes = append(f.writes, fmt.Sprintf("undrain %s by %s", addr, by))
	return f.refuse
}

func (f *fakePool) FailBack(by string) ([]pool.FamilySwitch, error) {
	f.writes = append(f.writes, "failback by "+by)
	if f.refuse != nil {
		return nil, f.refuse
	}
	return []pool.FamilySwitch{{Family: "ipv4", Switch: balance.Switch{From: 100, To: 200}}}, nil
}

// fakeView is a pool of one zone whose every backend in service is down, whose etcd list
// skips a key, whose fleet agreed on group 100, and whose drained backend serves as a last
// resort.
func fakeView() (*fakePool, *View) {
	since := time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC)
	connected := true
	var groups, healthy balance.Groups
	groups.Add(200)
	groups.Add(100)
	healthy.Add(100)
	cfg := pool.Config{
		Server: "dns://10.0.0.53:53", Zone: "app.lan.", Policy: "random", AllDown: pool.AllDownServfail,
		Spec:    health.Spec{Interval: time.Second, Timeout: 500 * time.Millisecond, Rise: 2, Fall: 3},
		Checks:  []health.Check{{Kind: health.TCP, Port: 8080}},
		Preempt: balance.Preemption{Never: true},
		Source:  pool.Source{Kind: pool.SourceEtcd, Etcd: pool.EtcdSource{Endpoints: []string{"http://10.0.0.5:2379"}, Prefix: "/healthdns/app.lan/"}},
	}
	down := health.Status{Checked: true, Since: since, Failures: 3, LastFailure: fmt.Errorf("tcp :8080: %w", syscall.ECONNREFUSED), LastFailureAt: since}
	up := health.Status{Up: true, Checked: true, Since: since, Successes: 9}
	f := &fakePool{server: cfg.Server, zone: cfg.Zone, view: pool.Status{
		Config:  cfg,
		AllDown: true,
		Families: []pool.FamilyStatus{{
			Family: "ipv4", Configured: 2, ServingDrained: true, Serving: 100, Groups: groups, Healthy: healthy,
			Agreement: &pool.Agreement{Key: "/healthdns/app.lan/_group/ipv4", Known: true, Group: 100, Revision: 42, Connected: true},
		}},
		Source: &pool.SourceStatus{Backends: 2, LastLoad: since, Connected: &connected,
			Skipped: []pool.SkippedKey{{Key: "/healthdns/app.lan/web3", Error: "invalid address 'web3'"}}},
		Backends: []pool.BackendStatus{
			{Backend: pool.Backend{Addr: netip.MustParseAddr("10.0.0.1"), Weight: 1, Priority: 200}, Checks: []health.Status{down}},
			{Backend: pool.Backend{Addr: netip.MustParseAddr("10.0.0.2"), Weight: 2, Priority: 100}, Answers: 7, Checks: []health.Status{up},
				DrainedBy: "api", Drained: pool.Drain{On: true, Reason: "kernel upgrade"}, Caller: "10.0.0.9:4242", Since: since},
		},
	}}
	v := &View{Config: Config{Addr: "10.0.0.53:8053", Token: apiToken, File: "Corefile", Line: 9},
		Pools: []Shown{{Pool: f, Answers: 2, TTL: 30, Serial: 7}}, Process: Process{Version: "1.14.7", Started: since}}
	return f, v
}

// TestFakeDocument: /status.json says what the pool's view says, field by field, under the
// schema's version, and only with the token.
func TestFakeDocument(t *testing.T) {
	_, v := fakeView()
	srv := httptest.NewServer(v)
	defer srv.Close()
	get := func(auth string) (*http.Response, Document) {
		req, _ := http.NewRequest(http.MethodGet, srv.URL+"/status.json", nil)
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var doc Document
		if resp.StatusCode == http.StatusOK {
			if err := json.NewDecoder(resp.Body).Decode(&doc); err != nil {
				t.Fatal(err)
			}
		}
		return resp, doc
	}
	if resp, _ := get(""); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("without the token: %d, want 401", resp.StatusCode)
	}
	resp, doc := get("Bearer " + apiToken)
	if resp.StatusCode != http.StatusOK || doc.Version != SchemaVersion || doc.HealthDNS.Version != "1.14.7" || len(doc.Pools) != 1 {
		t.Fatalf("%d: %+v", resp.StatusCode, doc)
	}
	p := doc.Pools[0]
	if p.Zone != "app.lan." || p.Answers != 2 || p.TTL != 30 || p.AllDownMode != "servfail" || !p.AllDown || p.Preemption != "nopreempt" || p.Fall != 3 {
		t.Errorf("pool %+v", p)
	}
	f := p.Families[0]
	if !f.ServingDrained || f.ServingPriority != 100 || fmt.Sprint(f.Priorities, f.HealthyPriorities) != "[200 100] [100]" ||
		f.Agreement == nil || f.Agreement.Group != 100 || f.Agreement.Revision != 42 {
		t.Errorf("family %+v", f)
	}
	if len(p.Sources) != 2 || p.Sources[1].Kind != "etcd" || len(p.Sources[1].Skipped) != 1 || p.Sources[1].Connected == nil || !*p.Sources[1].Connected {
		t.Errorf("sources %+v", p.Sources)
	}
	dead, drained := p.Backends[0], p.Backends[1]
	if dead.State != "down" || dead.Reason != "refused" || dead.Error != "tcp :8080: connection refused" || dead.Checks[0].Failures != 3 {
		t.Errorf("the dead backend %+v", dead)
	}
	if drained.State != "drained" || drained.DrainedBy != "api" || drained.DrainReason != "kernel upgrade" || drained.DrainCaller != "10.0.0.9:4242" ||
		drained.Answers != 7 || drained.Checks[0].State != "up" {
		t.Errorf("the drained backend %+v", drained)
	}
}

// TestFakeWrites: each write reaches the pool as the caller asked it, named by the caller's
// address; the pool's refusals come back with their status codes; a write the surface refuses
// never reaches the pool.
func TestFakeWrites(t *testing.T) {
	bearer := "Bearer " + apiToken
	f, v := fakeView()
	for _, tc := range []struct {
		path, body string
		write      string
		state      string
	}{
		{"/api/v1/drain", `{"zone":"APP.lan","backend":"10.0.0.1","reason":"disk","until":"2099-01-01T00:00:00Z"}`,
			`drain 10.0.0.1 until 2099-01-01T00:00:00Z reason "disk" by 192.0.2.99:53422`, "drained"},
		{"/api/v1/undrain", `{"zone":"app.lan.","backend":"::ffff:10.0.0.2"}`, "undrain 10.0.0.2 by 192.0.2.99:53422", "undrained"},
		{"/api/v1/failback", `{"server":"dns://10.0.0.53:53","zone":"app.lan"}`, "failback by 192.0.2.99:53422", ""},
	} {
		f.writes = nil
		w := post(v, tc.path, bearer, tc.body)
		var a writeAnswer
		json.Unmarshal(w.Body.Bytes(), &a)
		if w.Code != http.StatusOK || !a.OK || a.State != tc.state || len(f.writes) != 1 || f.writes[0] != tc.write {
			t.Errorf("%s: %d %s; the pool got %q, want %q", tc.path, w.Code, w.Body, f.writes, tc.write)
		}
	}
	if w := post(v, "/api/v1/failback", bearer, `{"zone":"app.lan"}`); !strings.Contains(w.Body.String(), `"switched":[{"family":"ipv4","from":100,"to":200}]`) {
		t.Errorf("fail-back answer %s, want the switch", w.Body)
	}

	for kind, code := range map[pool.Refusal]int{pool.NotFound: 404, pool.Conflict: 409, pool.Unavailable: 503} {
		f.refuse = &pool.RefusedError{Kind: kind}
		if w := post(v, "/api/v1/undrain", bearer, `{"zone":"app.lan","backend":"10.0.0.1"}`); w.Code != code {
			t.Errorf("refusal kind %d: %d, want %d", kind, w.Code, code)
		}
	}
	f.refuse, f.writes = nil, nil
	for _, body := range []string{`{"zone":"app.lan","backend":"10.0.0.1","until":"2000-01-01T00:00:00Z"}`, `{"zone":"www.lan","backend":"10.0.0.1"}`, `{"zone":"app.lan","backend":"web1"}`} {
		if w := post(v, "/api/v1/drain", bearer, body); w.Code == http.StatusOK {
			t.Errorf("%s: %d %s, want a refusal", body, w.Code, w.Body)
		}
	}
	if w := post(v, "/api/v1/drain", "Bearer nope", `{"zone":"app.lan","backend":"10.0.0.1"}`); w.Code != http.StatusUnauthorized {
		t.Errorf("a wrong token: %d", w.Code)
	}
	if len(f.writes) != 0 {
		t.Errorf("refused writes reached the pool: %q", f.writes)
	}
}

func (f *fakePool) Report(addr netip.Addr, r pool.Report, by string) (bool, error) {
	f.writes = append(f.writes, fmt.Sprintf("report %s pass %v output %q by %s", addr, r.Pass, r.Output, by))
	return r.Pass, f.refuse
}

func (f *fakePool) ReportToken() string { return "" }
