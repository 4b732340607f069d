package status

import (
	"context"
	"encoding/json"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/healthdns/healthdns/health"
	"github.com/healthdns/healthdns/pool"
)

const zoneToken = "r3port-r3port-r3port"

// pushPool is a running pool of 10.0.0.1 and 10.0.0.2 with a tcp check that passes and a push
// check with fall 1 that takes zoneToken.
func pushPool(t *testing.T) (*pool.Pool, running) {
	t.Helper()
	cfg := testConfig("push.lan.", "10.0.0.1", "10.0.0.2")
	cfg.Checks = append(cfg.Checks, health.Check{Kind: health.Push, TTL: time.Hour})
	cfg.Spec.Fall = 1
	cfg.ReportToken = zoneToken
	r := newRunning(func(context.Context, netip.Addr) error { return nil })
	return r.start(t, cfg), r
}

func postReport(t *testing.T, v *View, path, token, body string) (int, writeAnswer) {
	t.Helper()
	auth := ""
	if token != "" {
		auth = "Bearer " + token
	}
	w := post(v, path, auth, body)
	var a writeAnswer
	if err := json.Unmarshal(w.Body.Bytes(), &a); err != nil {
		t.Fatalf("%d %q: not JSON: %v", w.Code, w.Body, err)
	}
	return w.Code, a
}

// TestStatusReport: a report with the listener's token or the zone's report token feeds the
// push check and answers its state; the zone's token does nothing else; a report's output is
// kept to one line.
func TestStatusReport(t *testing.T) {
	p, _ := pushPool(t)
	v := writeView(shown(p))
	if c := poolDoc(Shown{Pool: p}, p.Status()).Checks[1]; c.Check != "push 1h0m0s" || c.Kind != "push" || c.TTLSeconds != 3600 || !c.ReportToken {
		t.Errorf("the push check in /status.json: %+v; want its TTL, and that it has a token of its own", c)
	}
	code, a := postReport(t, v, "/api/v1/report", apiToken, `{"zone":"push.lan","backend":"10.0.0.1","result":"pass","output":"replica, lag 0s"}`)
	if code != http.StatusOK || !a.OK || a.Zone != "push.lan." || a.Backend != "10.0.0.1" || a.State != "up" {
		t.Fatalf("a pass with the listener's token: %d %+v", code, a)
	}
	waitServing(t, p, "10.0.0.1", "the backend that reported, not the silent one")

	code, a = postReport(t, v, "/api/v1/report", zoneToken, `{"zone":"push.lan.","backend":"10.0.0.2","result":"pass"}`)
	if code != http.StatusOK || a.State != "up" {
		t.Fatalf("a pass with the zone's report token: %d %+v", code, a)
	}
	waitServingSet(t, p, "both reported", "10.0.0.1", "10.0.0.2")

	code, a = postReport(t, v, "/api/v1/report", zoneToken, `{"zone":"push.lan.","backend":"10.0.0.1","result":"fail","output":"  pg_isready:\n no response\r\n\u001b[31m  "}`)
	if code != http.StatusOK || a.State != "down" {
		t.Fatalf("a fail with fall 1: %d %+v; want down at once", code, a)
	}
	waitServing(t, p, "10.0.0.2", "the backend that reported fail is out")
	if got := statusBackendOf(t, p, "10.0.0.1").Checks[1].LastFailure; got == nil || got.Error != "push: reported fail: pg_isready:  no response   [31m" {
		t.Errorf("the failure on the page: %+v; want the output on one line", got)
	}

	// The zone's token reports and does nothing else.
	if w := post(v, "/api/v1/drain", "Bearer "+zoneToken, `{"zone":"push.lan.","backend":"10.0.0.2"}`); w.Code != http.StatusUnauthorized {
		t.Errorf("a drain with the zone's report token: %d, want 401", w.Code)
	}
	if got := serving(p); len(got) != 1 || got[0] != "10.0.0.2" {
		t.Errorf("serving %v after the refused drain, want 10.0.0.2", got)
	}
}

// Every refusal of a report, with its status code; those of a backend the zone does not list
// are counted.
func TestStatusReportRefusals(t *testing.T) {
	p, r := pushPool(t)
	probed := statusPools(t, nil, testConfig("probed.lan.", "10.0.1.1"))[0]
	v := writeView(shown(p, probed))
	open := &View{Config: Config{Addr: "127.0.0.1:8053"}, Pools: shown(p, probed)}
	for _, tc := range []struct {
		name  string
		view  *View
		token string
		body  string
		code  int
		has   string
	}{
		{"without a token", v, "", `{"zone":"push.lan.","backend":"10.0.0.1","result":"pass"}`, 401, "the status listener's token or the zone's report token"},
		{"a wrong token", v, "n0t-the-t0ken-n0t", `{"zone":"push.lan.","backend":"10.0.0.1","result":"pass"}`, 401, "Bearer"},
		{"another zone's report token", v, zoneToken, `{"zone":"probed.lan.","backend":"10.0.1.1","result":"pass"}`, 401, "Bearer"},
		{"an unknown zone, wrong token", v, zoneToken, `{"zone":"www.lan.","backend":"10.0.0.1","result":"pass"}`, 401, "Bearer"},
		{"no token anywhere", open, zoneToken, `{"zone":"probed.lan.","backend":"10.0.1.1","result":"pass"}`, 403, "want 'check push TTL token FILE' or 'status 127.0.0.1:8053 token FILE'"},
		{"a result that is neither", v, apiToken, `{"zone":"push.lan.","backend":"10.0.0.1","result":"ok"}`, 400, `result 'ok': want "pass" or "fail"`},
		{"no result", v, apiToken, `{"zone":"push.lan.","backend":"10.0.0.1"}`, 400, `result '': want "pass" or "fail"`},
		{"a misspelt field", v, apiToken, `{"zone":"push.lan.","backend":"10.0.0.1","result":"pass","ouput":"x"}`, 400, `unknown field "ouput"`},
		{"not an address", v, apiToken, `{"zone":"push.lan.","backend":"db1","result":"pass"}`, 400, "backend: invalid address 'db1'"},
		{"an unlisted backend", v, zoneToken, `{"zone":"push.lan.","backend":"10.0.0.9","result":"pass"}`, 404, "zone push.lan. has no backend 10.0.0.9: a report counts only for a backend the zone lists"},
		{"a zone without a push check", v, apiToken, `{"zone":"probed.lan.","backend":"10.0.1.1","result":"pass"}`, 409, "zone probed.lan. has no push check: want 'check push TTL'"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, a := postReport(t, tc.view, "/api/v1/report", tc.token, tc.body)
			if code != tc.code || a.OK || !strings.Contains(a.Error, tc.has) {
				t.Errorf("%d %+v; want %d with an error containing %q", code, a, tc.code, tc.has)
			}
		})
	}
	if n := testutil.ToFloat64(r.metrics.ReportsRefusedTotal.WithLabelValues("dns://127.0.0.1:1053", "push.lan.", pool.ReportUnlisted)); n != 1 {
		t.Errorf("reports refused as unlisted: %v, want 1", n)
	}
	if got := serving(p); len(got) != 0 {
		t.Errorf("refused reports made the pool serve %v", got)
	}
	// The listener without a token takes the zone's.
	if code, a := postReport(t, open, "/api/v1/report", zoneToken, `{"zone":"push.lan.","backend":"10.0.0.1","result":"pass"}`); code != 200 || a.State != "up" {
		t.Errorf("a report with the zone's token to a listener without one: %d %+v", code, a)
	}
}
