package test

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/healthdns/healthdns/test/harness"
)

var measureNotify = flag.Bool("notify.measure", false, "TestMeasureNotify: measure notify's delivery delay and what a hanging target costs (about a minute)")

// TestMeasureNotify measures, and asserts nothing of the figures (docs/RELIABILITY.md, "Notify"):
//
//	go test -count=1 -run TestMeasureNotify -v ./test/ -args -notify.measure
//
// 1. Delivery delay: from an event's time to its arrival at a local HTTP receiver and at a
// script (its start, as the script's first act, `date`, records), for events made by API
// drains and undrains, one every 20 ms.
// 2. What a hanging target costs: the same storm of events, with DNS queried throughout, once
// without notify lines and once with a receiver that never answers and a script that never
// ends: query latency and the probe loops' lateness, side by side.
func TestMeasureNotify(t *testing.T) {
	if !*measureNotify {
		t.Skip("a measurement: -args -notify.measure")
	}
	const a, b = "127.0.14.41", "127.0.14.42"
	port, _ := harness.StartBackends(t, a, b)
	const token = "notify-measure-0123456789"
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	// The receiver notes when each event arrived.
	var mu sync.Mutex
	arrived := map[uint64]time.Duration{}
	hang := false
	ln, err := net.Listen("tcp", "127.0.14.50:0")
	if err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		at := time.Now()
		body, _ := io.ReadAll(r.Body)
		var e struct {
			Seq  uint64    `json:"seq"`
			Time time.Time `json:"time"`
		}
		json.Unmarshal(body, &e)
		mu.Lock()
		arrived[e.Seq] = at.Sub(e.Time)
		h := hang
		mu.Unlock()
		if h {
			select {
			case <-stop:
			case <-r.Context().Done():
			}
		}
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { close(stop); srv.Close() })
	url := "http://" + ln.Addr().String() + "/"

	dir := t.TempDir()
	runs := filepath.Join(dir, "runs")
	os.Mkdir(runs, 0o755)
	// The script's start: GNU date's nanoseconds, then the event's time from the environment.
	script := filepath.Join(dir, "note")
	os.WriteFile(script, []byte("#!/bin/sh\necho \"$(date +%s.%N) $HEALTHDNS_TIME\" > "+runs+"/$HEALTHDNS_SEQ\n"), 0o755)
	hangScript := filepath.Join(dir, "hang")
	os.WriteFile(hangScript, []byte("#!/bin/sh\nexec sleep 600\n"), 0o755)

	run := func(name string, notify []string, events int) {
		statusAddr := "127.0.0.1:" + strconv.Itoa(harness.FreePort(t))
		s := harness.Start(t, ".:{{PORT}} {\n bind 127.0.0.1\n prometheus {{METRICS}}\n"+
			harness.TCPPool("measure.lan", port, "100ms", "50ms", []string{a, b},
				append([]string{"status " + statusAddr + " token " + tokenFile}, notify...)...)+"}\n")
		api := &apiClient{base: "http://" + statusAddr, token: token, http: &http.Client{Timeout: 5 * time.Second}}
		lateness := func() (sum, count float64) {
			m, err := harness.ScrapeURL("http://" + s.MetricsAddr + "/metrics")
			if err != nil {
				t.Fatal(err)
			}
			sum, _ = m.Value("coredns_healthdns_probe_lateness_seconds_sum", nil)
			count, _ = m.Value("coredns_healthdns_probe_lateness_seconds_count", nil)
			return sum, count
		}
		sum0, count0 := lateness()
		done := make(chan struct{})
		var queries []time.Duration
		go func() {
			defer close(done)
			c := &dns.Client{Net: "udp", Timeout: time.Second}
			m := new(dns.Msg)
			m.SetQuestion("measure.lan.", dns.TypeA)
			for i := 0; i < 2*events; i++ {
				start := time.Now()
				if _, _, err := c.Exchange(m, s.Addr); err == nil {
					queries = append(queries, time.Since(start))
				}
				time.Sleep(10 * time.Millisecond)
			}
		}()
		for i := 0; i < events/2; i++ {
			api.post(t, "/api/v1/drain", token, `{"zone":"measure.lan.","backend":"`+b+`"}`)
			time.Sleep(20 * time.Millisecond)
			api.post(t, "/api/v1/undrain", token, `{"zone":"measure.lan.","backend":"`+b+`"}`)
			time.Sleep(20 * time.Millisecond)
		}
		<-done
		sum1, count1 := lateness()
		slices.Sort(queries)
		t.Logf("%s: %d queries during %d events: latency p50 %s, p99 %s, max %s; probes %v, mean lateness %s",
			name, len(queries), events, pct(queries, 50), pct(queries, 99), queries[len(queries)-1],
			count1-count0, time.Duration((sum1-sum0)/(count1-count0)*float64(time.Second)).Round(time.Microsecond))
	}

	// 1. Delivery delay.
	run("receiver and script that answer", []string{"notify http " + url, "notify exec " + script}, 200)
	time.Sleep(2 * time.Second) // the last runs
	mu.Lock()
	var httpDelays []time.Duration
	for _, d := range arrived {
		httpDelays = append(httpDelays, d)
	}
	mu.Unlock()
	var execDelays []time.Duration
	files, _ := filepath.Glob(filepath.Join(runs, "*"))
	for _, f := range files {
		data, _ := os.ReadFile(f)
		var started float64
		var at string
		if _, err := fmt.Sscanf(string(data), "%f %s", &started, &at); err != nil {
			continue
		}
		eventTime, err := time.Parse(time.RFC3339Nano, at)
		if err != nil {
			continue
		}
		execDelays = append(execDelays, time.Unix(0, int64(started*1e9)).Sub(eventTime))
	}
	slices.Sort(httpDelays)
	slices.Sort(execDelays)
	for _, c := range []struct {
		name   string
		delays []time.Duration
	}{{"http", httpDelays}, {"exec", execDelays}} {
		if len(c.delays) == 0 {
			t.Logf("%s: no delivery measured", c.name)
			continue
		}
		t.Logf("delivery delay, %s: %d events, p50 %s, p95 %s, max %s", c.name, len(c.delays), pct(c.delays, 50), pct(c.delays, 95), c.delays[len(c.delays)-1])
	}

	// 2. Without notify, and with targets that hang.
	run("no notify", nil, 400)
	mu.Lock()
	hang = true
	mu.Unlock()
	run("a hanging receiver and a hanging script", []string{"notify http " + url + " timeout 1h", "notify exec " + hangScript + " timeout 1h"}, 400)
}

func pct(sorted []time.Duration, p int) time.Duration {
	return sorted[(len(sorted)-1)*p/100]
}
