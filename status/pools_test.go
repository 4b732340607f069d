package status

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// request sends method path to v as the test's caller, with the token and any headers given.
func request(v *View, method, path, body string, header ...string) *httptest.ResponseRecorder {
	r := httptest.NewRequest(method, path, strings.NewReader(body))
	r.RemoteAddr = "192.0.2.99:53422"
	r.Header.Set("Authorization", "Bearer "+apiToken)
	for i := 0; i+1 < len(header); i += 2 {
		r.Header.Set(header[i], header[i+1])
	}
	w := httptest.NewRecorder()
	v.ServeHTTP(w, r)
	return w
}

// Every refusal carries a code a client can branch on, the old writes' as the new endpoints'.
func TestStatusAPIErrorCodes(t *testing.T) {
	p := drainedPool(t)
	v := writeView(shown(p))
	for _, tc := range []struct {
		name, method, path, body string
		header                   []string
		status                   int
		code, has                string
	}{
		{"unknown endpoint", "POST", "/api/v1/reboot", `{}`, nil, 404, "not_found", "no endpoint"},
		{"drain GET", "GET", "/api/v1/drain", "", nil, 405, "method_not_allowed", "takes POST"},
		{"drain unknown zone", "POST", "/api/v1/drain", `{"zone":"www.lan","backend":"10.0.0.1"}`, nil, 404, "zone_not_found", "no zone www.lan."},
		{"drain unknown backend", "POST", "/api/v1/drain", `{"zone":"app.lan.","backend":"10.0.0.9"}`, nil, 404, "backend_not_found", "has no backend 10.0.0.9"},
		{"drain bad body", "POST", "/api/v1/drain", `zone=app.lan.`, nil, 400, "bad_request", "want a JSON object"},
		{"undrain configured drain", "POST", "/api/v1/undrain", `{"zone":"app.lan.","backend":"10.0.0.3"}`, nil, 409, "conflict", "lift or change that drain there"},
		{"wrong token", "POST", "/api/v1/drain", `{}`, []string{"Authorization", "Bearer wrong-wrong-wrong-wrong"}, 401, "unauthorized", "Bearer"},
		{"pools wrong token", "GET", "/api/v1/pools", "", []string{"Authorization", "Bearer wrong-wrong-wrong-wrong"}, 401, "unauthorized", "Bearer"},
		{"pool unknown zone", "GET", "/api/v1/pools/www.lan.", "", nil, 404, "zone_not_found", "no zone www.lan."},
		{"pools POST", "POST", "/api/v1/pools", "", nil, 405, "method_not_allowed", "takes GET"},
		{"pools deeper path", "GET", "/api/v1/pools/app.lan./members", "", nil, 404, "not_found", "want /api/v1/pools"},
		{"put a Corefile backend", "PUT", "/api/v1/pools/app.lan./backends/10.0.0.1", `{"weight":3}`, nil, 409, "read_only", "backend 10.0.0.1 is listed by its backend line in the Corefile"},
		{"put a new backend of a Corefile zone", "PUT", "/api/v1/pools/app.lan/backends/10.0.0.9", `{"weight":3}`, nil, 409, "read_only", "takes its backends from its backend lines in the Corefile, not from etcd"},
		{"put a bad address", "PUT", "/api/v1/pools/app.lan./backends/web1", `{}`, nil, 400, "bad_request", "invalid address 'web1'"},
		{"put a bad If-Match", "PUT", "/api/v1/pools/app.lan./backends/10.0.0.9", `{}`, []string{"If-Match", "abc"}, 400, "bad_request", "If-Match abc"},
		{"put an unknown field", "PUT", "/api/v1/pools/app.lan./backends/10.0.0.9", `{"wieght":3}`, nil, 400, "bad_request", `unknown field "wieght"`},
		{"put a reason without drain", "PUT", "/api/v1/pools/app.lan./backends/10.0.0.9", `{"reason":"x"}`, nil, 400, "bad_request", "want \"drain\": true"},
		{"delete without If-Match", "DELETE", "/api/v1/pools/app.lan./backends/10.0.0.1", "", nil, 428, "precondition_required", "wants If-Match"},
		{"post a backend", "POST", "/api/v1/pools/app.lan./backends/10.0.0.1", "", nil, 405, "method_not_allowed", "GET, PUT or DELETE"},
		{"get an unlisted backend", "GET", "/api/v1/pools/app.lan./backends/10.0.0.9", "", nil, 404, "backend_not_found", "has no backend 10.0.0.9"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := request(v, tc.method, tc.path, tc.body, tc.header...)
			var a writeAnswer
			if err := json.Unmarshal(w.Body.Bytes(), &a); err != nil {
				t.Fatalf("%d %q: not JSON: %v", w.Code, w.Body, err)
			}
			if w.Code != tc.status || a.Code != tc.code || !strings.Contains(a.Error, tc.has) {
				t.Errorf("%s %s: %d %s; want %d, code %q, an error containing %q", tc.method, tc.path, w.Code, w.Body, tc.status, tc.code, tc.has)
			}
		})
	}
	if drained := drainedByAPI(p); len(drained) != 0 {
		t.Errorf("refused writes left operator drains: %v", drained)
	}
}

// The pools read as /status.json does: all of them, one, and one backend with its status.
func TestStatusPoolsRead(t *testing.T) {
	p := drainedPool(t)
	other := statusPools(t, nil, testConfig("one.lan.", "10.0.1.1"))[0]
	v := writeView(shown(p, other))

	w := request(v, "GET", "/api/v1/pools", "")
	var all PoolsDoc
	if err := json.Unmarshal(w.Body.Bytes(), &all); w.Code != http.StatusOK || err != nil {
		t.Fatalf("GET /api/v1/pools: %d %v", w.Code, err)
	}
	if all.Version != SchemaVersion || len(all.Pools) != 2 || all.Pools[0].Zone != "app.lan." || all.Pools[1].Zone != "one.lan." {
		t.Errorf("GET /api/v1/pools: %+v; want version %d and the pools app.lan. and one.lan.", all, SchemaVersion)
	}

	w = request(v, "GET", "/api/v1/pools/ONE.lan", "")
	var one PoolDoc
	if err := json.Unmarshal(w.Body.Bytes(), &one); w.Code != http.StatusOK || err != nil {
		t.Fatalf("GET /api/v1/pools/ONE.lan: %d %v", w.Code, err)
	}
	if one.Zone != "one.lan." || len(one.Backends) != 1 || one.Backends[0].Address != "10.0.1.1" {
		t.Errorf("GET /api/v1/pools/ONE.lan: %+v; want one.lan. and its backend 10.0.1.1", one)
	}

	w = request(v, "GET", "/api/v1/pools/app.lan./backends/10.0.0.3", "")
	var b BackendAnswer
	if err := json.Unmarshal(w.Body.Bytes(), &b); w.Code != http.StatusOK || err != nil {
		t.Fatalf("GET backend: %d %v", w.Code, err)
	}
	if b.Key != "" || w.Header().Get("ETag") != "" || b.Status == nil || b.Status.State != "drained" || b.Status.DrainReason != "disk swap" {
		t.Errorf("GET a Corefile backend: %s (ETag %q); want its status, drained for disk swap, and no key nor ETag", w.Body, w.Header().Get("ETag"))
	}
}
