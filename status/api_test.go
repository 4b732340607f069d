package status

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/healthdns/healthdns/balance"
	"github.com/healthdns/healthdns/pool"
	"github.com/healthdns/healthdns/test/testkit"
)

const apiToken = "s3cret-s3cret-s3cret"

// post sends a write to v as the test's caller, with the token unless auth says otherwise.
func post(v *View, path, auth, body string) *httptest.ResponseRecorder {
	r := httptest.NewRequest(http.MethodPost, path, strings.NewReader(body))
	r.RemoteAddr = "192.0.2.99:53422"
	if auth != "" {
		r.Header.Set("Authorization", auth)
	}
	w := httptest.NewRecorder()
	v.ServeHTTP(w, r)
	return w
}

func writeView(pools []Shown) *View {
	return &View{Config: Config{Addr: "127.0.0.1:8053", Token: apiToken, File: "Corefile", Line: 7}, Pools: pools}
}

// drainedPool is a started pool of 10.0.0.1, 10.0.0.2 and 10.0.0.3, all healthy, whose 10.0.0.3
// its backend line drains.
func drainedPool(t *testing.T) *pool.Pool {
	t.Helper()
	cfg := testConfig("app.lan.", "10.0.0.1", "10.0.0.2", "10.0.0.3")
	cfg.Backends[2].Drain = pool.Drain{On: true, Reason: "disk swap"}
	return statusPools(t, nil, cfg)[0]
}

// Every refusal of a write, with its status code, and that none of them changed anything.
func TestStatusWriteRefusals(t *testing.T) {
	p := drainedPool(t)
	other := statusPools(t, nil, testConfig("one.lan.", "10.0.1.1"))[0]
	v := writeView(shown(p, other))
	bearer := "Bearer " + apiToken
	past := time.Now().Add(-time.Minute).UTC().Format(time.RFC3339)
	for _, tc := range []struct {
		name, method, path, auth, body string
		code                           int
		has                            string
	}{
		{"no token configured", "POST", "/api/v1/drain", bearer, `{"zone":"app.lan.","backend":"10.0.0.1"}`, 403, "want 'status 127.0.0.1:8053 token FILE'"},
		{"without the token", "POST", "/api/v1/drain", "", `{"zone":"app.lan.","backend":"10.0.0.1"}`, 401, "Bearer"},
		{"a wrong token", "POST", "/api/v1/drain", "Bearer s3cre", `{"zone":"app.lan.","backend":"10.0.0.1"}`, 401, "Bearer"},
		{"the token as a cookie", "POST", "/api/v1/drain", "", `{"zone":"app.lan.","backend":"10.0.0.1"}`, 401, "Bearer"},
		{"GET", "GET", "/api/v1/drain", bearer, "", 405, "takes POST"},
		{"PUT", "PUT", "/api/v1/undrain", bearer, `{"zone":"app.lan.","backend":"10.0.0.1"}`, 405, "takes POST"},
		{"an unknown endpoint", "POST", "/api/v1/reboot", bearer, `{}`, 404, "no endpoint /api/v1/reboot"},
		{"no zone", "POST", "/api/v1/drain", bearer, `{"backend":"10.0.0.1"}`, 400, `want "zone"`},
		{"an unknown zone", "POST", "/api/v1/drain", bearer, `{"zone":"www.lan","backend":"10.0.0.1"}`, 404, "no zone www.lan."},
		{"an unknown server", "POST", "/api/v1/failback", bearer, `{"server":"dns://:53","zone":"app.lan."}`, 404, "no zone app.lan. of server dns://:53"},
		{"an unknown backend", "POST", "/api/v1/drain", bearer, `{"zone":"app.lan.","backend":"10.0.0.9"}`, 404, "zone app.lan. has no backend 10.0.0.9"},
		{"undrain an unknown backend", "POST", "/api/v1/undrain", bearer, `{"zone":"app.lan.","backend":"10.0.0.9"}`, 404, "has no backend 10.0.0.9"},
		{"not an address", "POST", "/api/v1/drain", bearer, `{"zone":"app.lan.","backend":"web1"}`, 400, "backend: invalid address 'web1': want an IPv4 or IPv6 literal"},
		{"until past", "POST", "/api/v1/drain", bearer, `{"zone":"app.lan.","backend":"10.0.0.1","until":"` + past + `"}`, 400, "is past"},
		{"until not RFC 3339", "POST", "/api/v1/drain", bearer, `{"zone":"app.lan.","backend":"10.0.0.1","until":"tomorrow"}`, 400, "want an RFC 3339 time"},
		{"a misspelt field", "POST", "/api/v1/drain", bearer, `{"zone":"app.lan.","backend":"10.0.0.1","untill":"2099-01-01T00:00:00Z"}`, 400, `unknown field "untill"`},
		{"a field of another endpoint", "POST", "/api/v1/failback", bearer, `{"zone":"app.lan.","backend":"10.0.0.1"}`, 400, `unknown field "backend"`},
		{"not JSON", "POST", "/api/v1/drain", bearer, `zone=app.lan.`, 400, "want a JSON object"},
		{"two objects", "POST", "/api/v1/drain", bearer, `{"zone":"app.lan.","backend":"10.0.0.1"} {}`, 400, "found more after it"},
		{"a reason of two lines", "POST", "/api/v1/drain", bearer, `{"zone":"app.lan.","backend":"10.0.0.1","reason":"a\nforged log line"}`, 400, "on one line"},
		{"a reason with an escape", "POST", "/api/v1/drain", bearer, `{"zone":"app.lan.","backend":"10.0.0.1","reason":"\u001b[31mred"}`, 400, "drain reason holds U+001B at byte 0"},
		{"a reason with a bidi override", "POST", "/api/v1/drain", bearer, `{"zone":"app.lan.","backend":"10.0.0.1","reason":"disk \u202eswap"}`, 400, "drain reason holds U+202E"},
		{"a reason too long", "POST", "/api/v1/drain", bearer, `{"zone":"app.lan.","backend":"10.0.0.1","reason":"` + strings.Repeat("x", pool.MaxDrainReason+1) + `"}`, 400, "drain reason of 257 bytes"},
		{"a body too long", "POST", "/api/v1/drain", bearer, `{"zone":"app.lan.","backend":"10.0.0.1","reason":"` + strings.Repeat("x", maxWriteBody) + `"}`, 413, "body longer than"},
		{"undrain a configured drain", "POST", "/api/v1/undrain", bearer, `{"zone":"app.lan.","backend":"10.0.0.3"}`, 409, "backend 10.0.0.3 is drained by its backend line in the Corefile (disk swap); lift or change that drain there"},
		{"drain over a configured drain", "POST", "/api/v1/drain", bearer, `{"zone":"app.lan.","backend":"10.0.0.3"}`, 409, "drained by its backend line in the Corefile"},
		{"undrain what is not drained", "POST", "/api/v1/undrain", bearer, `{"zone":"app.lan.","backend":"10.0.0.1"}`, 409, "backend 10.0.0.1 is not drained"},
		{"fail back one group", "POST", "/api/v1/failback", bearer, `{"zone":"one.lan."}`, 409, "ipv4 has one priority group ({100}), nothing to fail back to"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			view := v
			if tc.name == "no token configured" {
				view = &View{Config: Config{Addr: "127.0.0.1:8053"}, Pools: v.Pools}
			}
			r := httptest.NewRequest(tc.method, tc.path, strings.NewReader(tc.body))
			if tc.auth != "" {
				r.Header.Set("Authorization", tc.auth)
			}
			if tc.name == "the token as a cookie" {
				r.Header.Set("Cookie", "token="+apiToken)
			}
			w := httptest.NewRecorder()
			view.ServeHTTP(w, r)
			var a writeAnswer
			if err := json.Unmarshal(w.Body.Bytes(), &a); err != nil {
				t.Fatalf("%d %q: not JSON: %v", w.Code, w.Body, err)
			}
			if w.Code != tc.code || a.OK || !strings.Contains(a.Error, tc.has) {
				t.Errorf("%s %s: %d %q; want %d with an error containing %q", tc.method, tc.path, w.Code, w.Body, tc.code, tc.has)
			}
			if tc.code == 405 && w.Header().Get("Allow") != "POST" {
				t.Errorf("405 with Allow %q, want POST", w.Header().Get("Allow"))
			}
		})
	}
	if got := serving(p); !slices.Equal(got, []string{"10.0.0.1", "10.0.0.2"}) {
		t.Errorf("after refused writes the pool serves %v, want 10.0.0.1 and 10.0.0.2 as before", got)
	}
	if drained := drainedByAPI(p); len(drained) != 0 {
		t.Errorf("refused writes left operator drains: %v", drained)
	}
}

// statusBackendOf is backend addr's entry in the pool's status.
func statusBackendOf(t *testing.T, p *pool.Pool, addr string) BackendDoc {
	t.Helper()
	for _, b := range poolDoc(Shown{Pool: p}, p.Status()).Backends {
		if b.Address == addr {
			return b
		}
	}
	t.Fatalf("no backend %s in the status", addr)
	return BackendDoc{}
}

func waitServingSet(t *testing.T, p *pool.Pool, what string, want ...string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for got := serving(p); !slices.Equal(got, want); got = serving(p) {
		if time.Now().After(deadline) {
			t.Fatalf("%s: serving %v, want %v", what, got, want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// A drain through the API acts as a drain on the backend line: not served, shown as drained by
// the API with its reason, end and caller, counted in the gauge, logged with the caller; an
// undrain brings it back.
func TestStatusWriteDrain(t *testing.T) {
	lines := testkit.LogLines(t)
	p := drainedPool(t)
	v := writeView(shown(p))
	until := time.Now().Add(time.Hour).UTC().Truncate(time.Second)
	w := post(v, "/api/v1/drain", "Bearer "+apiToken, `{"zone":"APP.lan","backend":"10.0.0.1","reason":"kernel upgrade","until":"`+until.Format(time.RFC3339)+`"}`)
	var a writeAnswer
	if err := json.Unmarshal(w.Body.Bytes(), &a); err != nil || w.Code != 200 || !a.OK || a.Zone != "app.lan." || a.Backend != "10.0.0.1" || a.State != "drained" || a.Until == nil || !a.Until.Equal(until) {
		t.Fatalf("drain: %d %s", w.Code, w.Body)
	}
	// At once, without a probe (the interval is an hour).
	if got := serving(p); !slices.Equal(got, []string{"10.0.0.2"}) {
		t.Errorf("after the drain: serving %v, want 10.0.0.2 alone", got)
	}
	b := statusBackendOf(t, p, "10.0.0.1")
	if b.State != "drained" || b.DrainedBy != "api" || b.DrainReason != "kernel upgrade" || b.DrainUntil == nil || !b.DrainUntil.Equal(until) ||
		b.DrainCaller != "192.0.2.99:53422" || b.DrainSince == nil {
		t.Errorf("status of the drained backend %+v", b)
	}
	if b := statusBackendOf(t, p, "10.0.0.3"); b.DrainedBy != "config" {
		t.Errorf("the Corefile's drain shows drained_by %q, want config", b.DrainedBy)
	}
	if g := testutil.ToFloat64(metricsOf(p).BackendDrained.WithLabelValues(cfgOf(p).Server, "app.lan.", "10.0.0.1")); g != 1 {
		t.Errorf("backend_drained = %v, want 1", g)
	}
	want := "zone app.lan.: backend 10.0.0.1: drained until " + until.Format(time.RFC3339) + " by 192.0.2.99:53422 via the status API (kernel upgrade)"
	if !slices.ContainsFunc(lines(), func(l string) bool { return strings.Contains(l, want) }) {
		t.Errorf("no log line %q in:\n%s", want, strings.Join(lines(), "\n"))
	}

	w = post(v, "/api/v1/undrain", "Bearer "+apiToken, `{"zone":"app.lan.","backend":"10.0.0.1"}`)
	if w.Code != 200 || !strings.Contains(w.Body.String(), `"ok":true`) {
		t.Fatalf("undrain: %d %s", w.Code, w.Body)
	}
	if got := serving(p); !slices.Equal(got, []string{"10.0.0.1", "10.0.0.2"}) {
		t.Errorf("after the undrain: serving %v, want both", got)
	}
	if b := statusBackendOf(t, p, "10.0.0.1"); b.State != "up" || b.DrainedBy != "" {
		t.Errorf("status after the undrain %+v", b)
	}
	if !slices.ContainsFunc(lines(), func(l string) bool {
		return strings.Contains(l, "zone app.lan.: backend 10.0.0.1: undrained by 192.0.2.99:53422 via the status API")
	}) {
		t.Errorf("no undrain line in:\n%s", strings.Join(lines(), "\n"))
	}
}

// A drain's end returns the backend on the pool's timer, with no probe to bring it (the
// interval is an hour), and is logged once.
func TestStatusWriteDrainEnds(t *testing.T) {
	lines := testkit.LogLines(t)
	p := drainedPool(t)
	until := time.Now().Add(300 * time.Millisecond)
	if err := p.Drain(p.Status().Backends[0].Addr, pool.Drain{Until: until, Reason: "reboot"}, "192.0.2.99:1"); err != nil {
		t.Fatal(err)
	}
	if got := serving(p); !slices.Equal(got, []string{"10.0.0.2"}) {
		t.Fatalf("while drained: serving %v", got)
	}
	waitServingSet(t, p, "after the drain's end", "10.0.0.1", "10.0.0.2")
	if time.Now().Before(until) {
		t.Error("served again before the drain's end")
	}
	n := 0
	for _, l := range lines() {
		if strings.Contains(l, "backend 10.0.0.1: drain by 192.0.2.99:1 via the status API ended at") {
			n++
		}
	}
	if n != 1 {
		t.Errorf("%d lines for the drain's end, want 1:\n%s", n, strings.Join(lines(), "\n"))
	}
	if drained := drainedByAPI(p); len(drained) != 0 {
		t.Errorf("the ended drain is still kept: %v", drained)
	}
}

// An operator's drain survives a reload: the next pool of the server and zone applies it from
// its start; a reload without the backend ignores it, and one that lists it again applies it.
// Another zone has drains of its own.
func TestStatusWriteDrainAcrossReload(t *testing.T) {
	p := drainedPool(t)
	if err := p.Drain(p.Status().Backends[0].Addr, pool.Drain{Reason: "kernel upgrade"}, "192.0.2.99:1"); err != nil {
		t.Fatal(err)
	}
	next := reloadPool(t, p, cfgOf(p))
	if got := serving(next); !slices.Equal(got, []string{"10.0.0.2"}) {
		t.Errorf("after the reload: serving %v, want 10.0.0.2 alone", got)
	}
	if b := statusBackendOf(t, next, "10.0.0.1"); b.DrainedBy != "api" || b.DrainReason != "kernel upgrade" {
		t.Errorf("after the reload the status shows %+v", b)
	}

	without := testConfig("app.lan.", "10.0.0.2")
	without.Server = cfgOf(p).Server
	gone := reloadPool(t, next, without)
	if got := serving(gone); !slices.Equal(got, []string{"10.0.0.2"}) {
		t.Errorf("a reload without the drained backend: serving %v", got)
	}
	back := reloadPool(t, gone, cfgOf(p))
	if got := serving(back); !slices.Equal(got, []string{"10.0.0.2"}) {
		t.Errorf("a reload listing the drained backend again: serving %v, want 10.0.0.2 alone", got)
	}

	otherCfg := testConfig("www.lan.", "10.0.0.1")
	otherCfg.Server = cfgOf(p).Server
	r, _ := runningOf.Load(p)
	other := r.(running).start(t, otherCfg)
	if got := serving(other); !slices.Equal(got, []string{"10.0.0.1"}) {
		t.Errorf("another zone of the same backend: serving %v, want it", got)
	}
}

// Under nopreempt, the primary's return leaves the standby serving until an operator fails
// back; a second fail-back changes nothing and says why; and the primary keeps serving across a
// reload, which carries the failover's state as the fail-back left it (a stale carry would put
// the standby back, as nopreempt keeps what it finds).
func TestStatusWriteFailBack(t *testing.T) {
	lines := testkit.LogLines(t)
	p, sw := groupPool(t, balance.Preemption{Never: true})
	v := writeView(shown(p))
	waitServing(t, p, "10.0.0.1", "at start")
	sw.Set("10.0.0.1", true)
	waitServing(t, p, "10.0.0.2", "primary dead")
	sw.Set("10.0.0.1", false)
	deadline := time.Now().Add(5 * time.Second)
	// The pool learns of the monitor's verdict on its rebuilder goroutine: what a fail-back
	// acts on is the group health its failover last saw, not the monitor's state.
	for !failoverSeesHealthy(p, 200) {
		if time.Now().After(deadline) {
			t.Fatal("the primary's group is not healthy again to the pool after 5s")
		}
		time.Sleep(5 * time.Millisecond)
	}
	waitServing(t, p, "10.0.0.2", "primary back under nopreempt")

	w := post(v, "/api/v1/failback", "Bearer "+apiToken, `{"zone":"ha.lan."}`)
	if w.Code != 200 || !strings.Contains(w.Body.String(), `"switched":[{"family":"ipv4","from":100,"to":200}]`) {
		t.Fatalf("failback: %d %s", w.Code, w.Body)
	}
	waitServing(t, p, "10.0.0.1", "after the fail-back")
	if !slices.ContainsFunc(lines(), func(l string) bool {
		return strings.Contains(l, "zone ha.lan.: ipv4 now served by priority group 200 (was 100): fail-back by 192.0.2.99:53422 via the status API")
	}) {
		t.Errorf("no fail-back line in:\n%s", strings.Join(lines(), "\n"))
	}
	w = post(v, "/api/v1/failback", "Bearer "+apiToken, `{"zone":"ha.lan."}`)
	if w.Code != 409 || !strings.Contains(w.Body.String(), "ipv4 is served by group 200, the highest of {200 100} with a healthy backend") {
		t.Errorf("a second failback: %d %s; want 409 saying the primary serves", w.Code, w.Body)
	}

	next := reloadPool(t, p, cfgOf(p))
	if got := serving(next); !slices.Equal(got, []string{"10.0.0.1"}) {
		t.Errorf("after a reload: serving %v, want the primary the fail-back chose", got)
	}
}

// failoverSeesHealthy reports whether the pool's last rebuild found a healthy ipv4 backend in
// priority group group.
func failoverSeesHealthy(p *pool.Pool, group uint8) bool {
	fams := p.Status().Families
	return len(fams) > 0 && fams[0].Healthy.Has(group)
}
