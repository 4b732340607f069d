package test

import (
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/healthdns/healthdns/test/harness"
)

// TestDrainedLastResort is issue 21's outage: priorities 200 and 100, the standby drained
// through the API, then the primary killed. Nothing in service is up, so the healthy drained
// standby is answered rather than the dead primary (serve_all), and everything an operator
// watches says so: backend_in_service_up is 0 for both (the critical alert's signal), while
// backend_up of the drained one stays 1; /status.json says all_down and serving_drained; the log
// says what is answered. The primary's return takes the answers back.
func TestDrainedLastResort(t *testing.T) {
	t.Parallel()
	const primary, standby = "127.0.2.11", "127.0.2.12"
	port, backends := harness.StartBackends(t, primary, standby)
	statusAddr := "127.0.0.1:" + strconv.Itoa(harness.FreePort(t))
	const token = "last-s3cret-0123456789"
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s := harness.Start(t, ".:{{PORT}} {\n bind 127.0.0.1\n prometheus {{METRICS}}\n"+
		harness.Pool("last.lan", nil, "backend "+primary+" priority 200", "backend "+standby+" priority 100",
			"check tcp "+strconv.Itoa(port), "interval 100ms", "timeout 50ms", "answers 2",
			"status "+statusAddr+" token "+tokenFile)+"}\n")
	api := &apiClient{base: "http://" + statusAddr, token: token, http: &http.Client{Timeout: 5 * time.Second}}
	serves := func(ips ...string) func() bool {
		return func() bool { return harness.SameSet(s.Addrs(t, "udp", "last.lan.", dns.TypeA), ips...) }
	}
	metric := func(name, ip string) float64 {
		v, _ := s.Scrape(t).Value(name, map[string]string{"zone": "last.lan.", "backend": ip})
		return v
	}
	harness.Eventually(t, 5*time.Second, serves(primary), "the primary alone answered")
	if v := metric("coredns_healthdns_backend_in_service_up", primary); v != 1 {
		t.Errorf("backend_in_service_up of the healthy primary = %v, want 1", v)
	}

	if code, body, _ := api.post(t, "/api/v1/drain", token, `{"zone":"last.lan.","backend":"`+standby+`","reason":"reimage"}`); code != http.StatusOK {
		t.Fatalf("drain of %s: %d %s", standby, code, body)
	}
	backends[primary].Stop()
	harness.Eventually(t, 10*time.Second, serves(standby), "the drained but healthy standby answered once the primary is down")
	if got := s.Addrs(t, "tcp", "last.lan.", dns.TypeA); !harness.SameSet(got, standby) {
		t.Errorf("over TCP: %v, want the drained standby %s", got, standby)
	}
	for ip, want := range map[string]float64{primary: 0, standby: 0} {
		if v := metric("coredns_healthdns_backend_in_service_up", ip); v != want {
			t.Errorf("backend_in_service_up of %s = %v, want %v: no backend in service is up", ip, v, want)
		}
	}
	if v := metric("coredns_healthdns_backend_up", standby); v != 1 {
		t.Errorf("backend_up of the drained standby = %v, want 1 (it passes its check)", v)
	}
	if v := metric("coredns_healthdns_answers_total", standby); v == 0 {
		t.Errorf("answers_total of the drained standby = 0 while it is answered")
	}
	pool := lastResortStatus(t, api, "last.lan.")
	if !pool.AllDown || len(pool.Families) != 1 || !pool.Families[0].ServingDrained || pool.Families[0].AllDown {
		t.Errorf("/status.json: %+v, want all_down true and ipv4 serving_drained (all_down_mode not deciding)", pool)
	}
	pageShows(t, api.base+"/#token="+token, `data-last-resort=""`, "answering the healthy drained ipv4 backends as a last resort")
	const line = "zone last.lan.: every backend in service is down (1 in service, 1 drained): answering the drained but healthy 1 (" + standby + ") as a last resort"
	harness.Eventually(t, 5*time.Second, func() bool { return strings.Contains(s.Output(), line) }, "the log line: ", line)

	backends[primary].Start()
	harness.Eventually(t, 10*time.Second, serves(primary), "the primary answered again once back")
	if pool := lastResortStatus(t, api, "last.lan."); pool.AllDown || pool.Families[0].ServingDrained {
		t.Errorf("/status.json once the primary is back: %+v, want neither all_down nor serving_drained", pool)
	}
}

type lastResortPool struct {
	AllDown  bool `json:"all_down"`
	Families []struct {
		Family         string `json:"family"`
		AllDown        bool   `json:"all_down"`
		ServingDrained bool   `json:"serving_drained"`
	} `json:"families"`
}

// lastResortStatus reads zone's all_down and families from /status.json.
func lastResortStatus(t *testing.T, api *apiClient, zone string) lastResortPool {
	t.Helper()
	var doc struct {
		Pools []struct {
			Zone string `json:"zone"`
			lastResortPool
		} `json:"pools"`
	}
	api.status(t, &doc)
	for _, p := range doc.Pools {
		if p.Zone == zone {
			return p.lastResortPool
		}
	}
	t.Fatalf("/status.json has no pool %s", zone)
	return lastResortPool{}
}
