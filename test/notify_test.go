package test

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/healthdns/healthdns/test/harness"
)

// notifiedEvent is what a notify target is given, as far as these tests read it.
type notifiedEvent struct {
	Seq     uint64 `json:"seq"`
	Kind    string `json:"kind"`
	Zone    string `json:"zone"`
	Backend string `json:"backend"`
	By      string `json:"by"`
	Why     string `json:"why"`
	To      *uint8 `json:"to"`
}

// hookReceiver is a local HTTP receiver of notify http: it keeps what it is POSTed, and
// answers with status, or not at all while hang is set.
type hookReceiver struct {
	URL    string
	status int
	hang   bool

	mu       sync.Mutex
	events   []notifiedEvent
	bad      []string // requests that were not a JSON event with the token
	requests int
}

func startReceiver(t *testing.T, ip string, status int, hang bool, token string) *hookReceiver {
	t.Helper()
	ln, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		t.Fatal(err)
	}
	r := &hookReceiver{URL: "http://" + ln.Addr().String() + "/hook", status: status, hang: hang}
	stop := make(chan struct{})
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		var e notifiedEvent
		r.mu.Lock()
		r.requests++
		switch {
		case req.Method != http.MethodPost || req.Header.Get("Content-Type") != "application/json" ||
			req.Header.Get("Authorization") != "Bearer "+token || json.Unmarshal(body, &e) != nil || e.Seq == 0:
			r.bad = append(r.bad, fmt.Sprintf("%s %s %q %q", req.Method, req.Header.Get("Content-Type"), req.Header.Get("Authorization"), body))
		default:
			r.events = append(r.events, e)
		}
		r.mu.Unlock()
		if r.hang {
			select {
			case <-stop:
			case <-req.Context().Done():
			}
			return
		}
		w.WriteHeader(r.status)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { close(stop); srv.Close() })
	return r
}

func (r *hookReceiver) got() ([]notifiedEvent, []string, int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]notifiedEvent(nil), r.events...), append([]string(nil), r.bad...), r.requests
}

// notifyScript writes a script that keeps each event it is run for in dir, as SEQ.json: its
// arguments on the first line, its environment's HEALTHDNS_EVENT and HEALTHDNS_ZONE on the
// second, its stdin on the third.
func notifyScript(t *testing.T) (script, dir string) {
	t.Helper()
	base := t.TempDir()
	dir = filepath.Join(base, "events")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	script = filepath.Join(base, "on-event")
	text := "#!/bin/sh\n" +
		"f=" + dir + "/$HEALTHDNS_SEQ\n" +
		"{ echo \"$*\"; echo \"$HEALTHDNS_EVENT $HEALTHDNS_ZONE\"; cat; echo; } > $f.tmp && mv $f.tmp $f.json\n"
	if err := os.WriteFile(script, []byte(text), 0o755); err != nil {
		t.Fatal(err)
	}
	return script, dir
}

// scriptRuns reads what notifyScript kept: each run's event, its argument line and its
// environment line, by sequence number.
func scriptRuns(t *testing.T, dir string) map[uint64][3]string {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(dir, "*.json"))
	runs := map[uint64][3]string{}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		lines := strings.SplitN(string(data), "\n", 3)
		if len(lines) < 3 {
			t.Fatalf("%s: %q is not three lines", f, data)
		}
		seq, _ := strconv.ParseUint(strings.TrimSuffix(filepath.Base(f), ".json"), 10, 64)
		runs[seq] = [3]string{lines[0], lines[1], strings.TrimSpace(lines[2])}
	}
	return runs
}

// TestNotifyEveryKind: every event kind, each from a real cause (a backend killed and
// restarted, a drain and an undrain through the API, a nopreempt failover and a fail-back
// through the API, all backends of a zone down, a backends file broken, mended, given a backend
// and losing it), reaches a
// notify exec script and a notify http receiver, each once, in order per zone, and the same
// events as the stream; a reload in the middle, which keeps the notify lines, loses none and
// doubles none.
func TestNotifyEveryKind(t *testing.T) {
	t.Parallel()
	const primary, standby, listed, added = "127.0.14.1", "127.0.14.2", "127.0.14.3", "127.0.14.4"
	port, backends := harness.StartBackends(t, primary, standby, listed)
	const token = "notify-s3cret-0123456789"
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	recv := startReceiver(t, "127.0.14.10", http.StatusOK, false, token)
	script, runsDir := notifyScript(t)
	list := filepath.Join(t.TempDir(), "list")
	writeList := func(text string) {
		t.Helper()
		if err := os.WriteFile(list+".tmp", []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(list+".tmp", list); err != nil {
			t.Fatal(err)
		}
	}
	writeList(listed + "\n")
	statusAddr := "127.0.0.1:" + strconv.Itoa(harness.FreePort(t))
	notifyLines := []string{
		"notify exec " + script + " {zone} {backend} {event} {state} {group}",
		"notify http " + recv.URL + " token " + tokenFile + " timeout 2s",
	}
	conf := func(comment string) string {
		return ".:{{PORT}} {\n bind 127.0.0.1\n # " + comment + "\n" +
			harness.Pool("nt.lan", nil, append([]string{
				"backend " + primary + " priority 200", "backend " + standby + " priority 100", "nopreempt",
				fmt.Sprintf("check tcp %d", port), "interval 100ms", "timeout 50ms", "rise 1", "fall 1",
				"status " + statusAddr + " token " + tokenFile}, notifyLines...)...) +
			harness.Pool("ntfile.lan", nil, append([]string{
				"backends_file " + list, fmt.Sprintf("check tcp %d", port), "interval 100ms", "timeout 50ms", "rise 1", "fall 1",
				"status " + statusAddr + " token " + tokenFile},
				notifyLines...)...) + "}\n"
	}
	s := harness.Start(t, conf("first"))
	api := &apiClient{base: "http://" + statusAddr, token: token, http: &http.Client{Timeout: 5 * time.Second}}
	stream := followEvents(t, "http://"+statusAddr+"/api/v1/events", token, 0)
	post := func(path, body string) {
		t.Helper()
		if code, answer, _ := api.post(t, path, token, body); code != http.StatusOK {
			t.Fatalf("POST %s %s: %d %s", path, body, code, answer)
		}
	}
	state := func(ip string) func() bool {
		return func() bool { st, _ := api.drainedBy(t, "nt.lan.", ip); return st == "down" }
	}
	streamHas := func(kind, backend string) {
		t.Helper()
		harness.Eventually(t, 15*time.Second, stream.has(kind, backend), kind+" "+backend+" on the stream")
	}

	backends[primary].Stop() // backend_down, group_switched 200 → 100 (failover)
	streamHas("backend_down", primary)
	streamHas("group_switched", "")
	post("/api/v1/drain", `{"zone":"nt.lan.","backend":"`+standby+`","reason":"patching"}`) // backend_drained, all_down
	streamHas("backend_drained", standby)
	streamHas("all_down", "")
	if err := s.Reload(t, conf("reloaded")); err != nil { // the same notify lines: kept
		t.Fatal(err)
	}
	// The reload ended the stream; the ring, which it kept, replays every event to a new one.
	stream = followEvents(t, "http://"+statusAddr+"/api/v1/events", token, 0)
	post("/api/v1/undrain", `{"zone":"nt.lan.","backend":"`+standby+`"}`) // backend_undrained, all_down_over
	streamHas("backend_undrained", standby)
	streamHas("all_down_over", "")
	backends[primary].Start() // backend_up; nopreempt: the standby's group keeps serving
	streamHas("backend_up", primary)
	harness.Eventually(t, 10*time.Second, func() bool { return !state(primary)() }, primary+" up again")
	post("/api/v1/failback", `{"zone":"nt.lan."}`) // group_switched 100 → 200 (fail-back)
	writeList(listed + " weight two\n")            // source_failed
	streamHas("source_failed", "")
	writeList(listed + "\n") // source_recovered
	streamHas("source_recovered", "")
	writeList(listed + "\n" + added + "\n") // backend_added
	streamHas("backend_added", added)
	writeList(listed + "\n") // backend_removed
	streamHas("backend_removed", added)

	want := stream.all()
	var wantSeqs []uint64
	kinds := map[string]bool{}
	for _, e := range want {
		wantSeqs = append(wantSeqs, e.ID)
		kinds[e.Kind] = true
	}
	for _, k := range []string{"backend_up", "backend_down", "backend_drained", "backend_undrained", "group_switched", "all_down", "all_down_over", "source_failed", "source_recovered", "backend_added", "backend_removed"} {
		if !kinds[k] {
			t.Errorf("no %s among the stream's events %v", k, want)
		}
	}
	harness.Eventually(t, 20*time.Second, func() bool {
		got, _, _ := recv.got()
		return len(got) >= len(want) && len(scriptRuns(t, runsDir)) >= len(want)
	}, len(want), " events at the receiver and the script")

	got, bad, _ := recv.got()
	if len(bad) > 0 {
		t.Errorf("the receiver got requests that were not a JSON event with the token: %q", bad)
	}
	var gotSeqs []uint64
	lastOfZone := map[string]uint64{}
	for _, e := range got {
		gotSeqs = append(gotSeqs, e.Seq)
		if e.Seq <= lastOfZone[e.Zone] {
			t.Errorf("the receiver got event %d of %s after %d", e.Seq, e.Zone, lastOfZone[e.Zone])
		}
		lastOfZone[e.Zone] = e.Seq
	}
	slices.Sort(gotSeqs)
	if !slices.Equal(gotSeqs, wantSeqs) {
		t.Errorf("the receiver got events %v, the stream %v: want each once", gotSeqs, wantSeqs)
	}
	runs := scriptRuns(t, runsDir)
	if len(runs) != len(want) {
		t.Errorf("the script ran for %d events, the stream has %d", len(runs), len(want))
	}
	for _, e := range want {
		run, ok := runs[e.ID]
		if !ok {
			t.Errorf("the script did not run for event %d (%s)", e.ID, e.Kind)
			continue
		}
		var ev notifiedEvent
		if err := json.Unmarshal([]byte(run[2]), &ev); err != nil || ev.Seq != e.ID || ev.Kind != e.Kind {
			t.Errorf("event %d: the script's stdin was %q (%v), want event %d %s", e.ID, run[2], err, e.ID, e.Kind)
			continue
		}
		group := ""
		if ev.To != nil {
			group = strconv.Itoa(int(*ev.To))
		}
		if !strings.HasPrefix(run[0], ev.Zone+" "+ev.Backend+" "+ev.Kind+" ") || !strings.HasSuffix(run[0], " "+group) || run[1] != ev.Kind+" "+ev.Zone {
			t.Errorf("event %d (%s): arguments %q, environment %q", e.ID, e.Kind, run[0], run[1])
		}
		if ev.Kind == "group_switched" && ev.Why == "" {
			t.Errorf("event %d: group_switched says no why", e.ID)
		}
		apiWrite := ev.Kind == "backend_drained" || ev.Kind == "backend_undrained" || ev.Kind == "group_switched" && strings.HasPrefix(ev.Why, "fail-back")
		if apiWrite && !strings.HasPrefix(ev.By, "api 127.0.0.1:") {
			t.Errorf("event %d (%s, %s): by %q, want api and the caller", e.ID, ev.Kind, ev.Why, ev.By)
		}
	}
	// DNS kept answering throughout: the primary again, after the fail-back.
	harness.Eventually(t, 10*time.Second, func() bool {
		return harness.SameSet(harness.AnswerAddrs(s.Query(t, "udp", "nt.lan.", dns.TypeA)), primary)
	}, "the primary answered after the fail-back")
}

// TestNotifyStuckTargets: a receiver that never answers, one that answers 500 and a script
// that hangs each hold their queue, while the zone keeps being probed and answered: drains
// through the API and a killed backend still change what DNS answers. The 500 receiver gets
// retries; past the queue's bound events are dropped, and counted.
func TestNotifyStuckTargets(t *testing.T) {
	t.Parallel()
	const steady, drained = "127.0.14.21", "127.0.14.22"
	port, backends := harness.StartBackends(t, steady, drained)
	const token = "notify-stuck-0123456789"
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	hanging := startReceiver(t, "127.0.14.30", http.StatusOK, true, token)
	failing := startReceiver(t, "127.0.14.31", http.StatusInternalServerError, false, token)
	script := filepath.Join(t.TempDir(), "hang")
	if err := os.WriteFile(script, []byte("#!/bin/sh\nexec sleep 600\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	statusAddr := "127.0.0.1:" + strconv.Itoa(harness.FreePort(t))
	s := harness.Start(t, ".:{{PORT}} {\n bind 127.0.0.1\n prometheus {{METRICS}}\n"+
		harness.TCPPool("stuck.lan", port, "100ms", "50ms", []string{steady, drained}, "rise 1", "fall 1",
			"status "+statusAddr+" token "+tokenFile,
			"notify http "+hanging.URL+" token "+tokenFile+" timeout 1h",
			"notify http "+failing.URL+" token "+tokenFile+" timeout 1s",
			"notify exec "+script+" timeout 1h")+"}\n")
	api := &apiClient{base: "http://" + statusAddr, token: token, http: &http.Client{Timeout: 5 * time.Second}}
	answers := func() []string { return harness.AnswerAddrs(s.Query(t, "udp", "stuck.lan.", dns.TypeA)) }
	answersOnly := func(ip string) func() bool {
		return func() bool {
			for range 5 { // answers 1, by policy random: several tries see both
				if !harness.SameSet(answers(), ip) {
					return false
				}
			}
			return true
		}
	}

	// 2 × 150 events, each published before the API answers; more than a queue holds.
	const rounds = 150
	for i := range rounds {
		if code, body, _ := api.post(t, "/api/v1/drain", token, `{"zone":"stuck.lan.","backend":"`+drained+`","reason":"round `+strconv.Itoa(i)+`"}`); code != http.StatusOK {
			t.Fatalf("drain %d: %d %s", i, code, body)
		}
		if i == 0 {
			harness.Eventually(t, 5*time.Second, answersOnly(steady), "only "+steady+" answered while "+drained+" is drained")
		}
		if code, body, _ := api.post(t, "/api/v1/undrain", token, `{"zone":"stuck.lan.","backend":"`+drained+`"}`); code != http.StatusOK {
			t.Fatalf("undrain %d: %d %s", i, code, body)
		}
	}
	// Probing goes on: the killed backend goes down, and DNS stops answering it.
	backends[steady].Stop()
	harness.Eventually(t, 10*time.Second, func() bool { st, _ := api.drainedBy(t, "stuck.lan.", steady); return st == "down" }, steady+" down")
	harness.Eventually(t, 5*time.Second, answersOnly(drained), "only "+drained+" answered once "+steady+" is down")

	value := func(name, channel string) float64 {
		m, err := harness.ScrapeURL("http://" + s.MetricsAddr + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		v, _ := m.Value(name, map[string]string{"channel": channel})
		return v
	}
	harness.Eventually(t, 10*time.Second, func() bool {
		return value("coredns_healthdns_notify_dropped_total", "http") > 0 && value("coredns_healthdns_notify_dropped_total", "exec") > 0
	}, "drops counted for both channels")
	// Each http target holds one event and queues 256: with two of them the drops are at least
	// 2 × (301 - 257) (the backend_down adds one), however the failing one's retries went.
	if d := value("coredns_healthdns_notify_dropped_total", "http"); d < 2*(2*rounds+1-257) {
		t.Errorf("http dropped %v events, want at least %d", d, 2*(2*rounds+1-257))
	}
	if d := value("coredns_healthdns_notify_dropped_total", "exec"); d < 2*rounds+1-257 {
		t.Errorf("exec dropped %v events, want at least %d", d, 2*rounds+1-257)
	}
	harness.Eventually(t, 20*time.Second, func() bool {
		got, _, _ := failing.got()
		return len(got) >= 2 && got[0].Seq == got[1].Seq
	}, "the 500 receiver given the same event again")
	if f := value("coredns_healthdns_notify_failures_total", "http"); f < 2 {
		t.Errorf("notify_failures_total{channel=http} %v, want the 500s counted", f)
	}
	if got, _, _ := hanging.got(); len(got) != 1 {
		t.Errorf("the hanging receiver got %d requests, want the one it holds", len(got))
	}
	if q := value("coredns_healthdns_notify_queue_depth", "http"); q < 256 {
		t.Errorf("notify_queue_depth{channel=http} %v, want the hanging receiver's full queue", q)
	}
	if n := strings.Count(s.Output(), "queue full (256 events)"); n != 3 {
		t.Errorf("%d lines say a queue is full, want one per stuck target:\n%s", n, s.Output())
	}
}

// TestNotifyEtcd: the events an etcd-fed zone adds to the rest, from real causes. A backend
// written through the API (backend_set, backend_added), etcd stopped (source_failed) and
// started again (source_recovered) each reach a notify exec script, a notify http receiver and
// the stream, once each.
func TestNotifyEtcd(t *testing.T) {
	harness.RequireEtcd(t)
	t.Parallel()
	const first, added = "127.0.14.61", "127.0.14.62"
	port, _ := harness.StartBackends(t, first, added)
	etcd := harness.StartEtcd(t)
	put(t, etcd.Client(t), "/healthdns/ne.lan/"+first, "")
	const token = "notify-etcd-0123456789"
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	recv := startReceiver(t, "127.0.14.63", http.StatusOK, false, token)
	script, runsDir := notifyScript(t)
	statusAddr := "127.0.0.1:" + strconv.Itoa(harness.FreePort(t))
	harness.Start(t, ".:{{PORT}} {\n bind 127.0.0.1\n"+etcdPool("ne.lan", etcd.Endpoint(), port,
		"status "+statusAddr+" token "+tokenFile,
		"notify exec "+script+" {zone} {backend} {event} {state} {group}",
		"notify http "+recv.URL+" token "+tokenFile+" timeout 2s")+"}\n")
	api := &apiClient{base: "http://" + statusAddr, token: token, http: &http.Client{Timeout: 5 * time.Second}}
	stream := followEvents(t, "http://"+statusAddr+"/api/v1/events", token, 0)

	req, _ := http.NewRequest(http.MethodPut, api.base+"/api/v1/pools/ne.lan./backends/"+added, strings.NewReader(`{"weight":2}`))
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := api.http.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("PUT of %s: %s", added, resp.Status)
	}
	harness.Eventually(t, 15*time.Second, stream.has("backend_set", added), "backend_set on the stream")
	harness.Eventually(t, 15*time.Second, stream.has("backend_added", added), "backend_added on the stream")

	etcd.Stop()
	harness.Eventually(t, 30*time.Second, stream.has("source_failed", ""), "source_failed on the stream once etcd stopped")
	etcd.Start()
	harness.Eventually(t, 30*time.Second, stream.has("source_recovered", ""), "source_recovered on the stream once etcd is back")

	kinds := func(events []notifiedEvent) []string {
		var out []string
		for _, e := range events {
			out = append(out, e.Kind)
		}
		return out
	}
	var want []string
	for _, e := range stream.all() {
		want = append(want, e.Kind)
	}
	harness.Eventually(t, 15*time.Second, func() bool {
		got, _, _ := recv.got()
		return len(got) >= len(want)
	}, "the receiver to get the stream's ", len(want), " events")
	got, bad, _ := recv.got()
	if !slices.Equal(kinds(got), want) || len(bad) > 0 {
		t.Errorf("the receiver got %v (bad requests %q), the stream %v: want the same, each once", kinds(got), bad, want)
	}
	harness.Eventually(t, 15*time.Second, func() bool { return len(scriptRuns(t, runsDir)) >= len(want) }, "the script to run for the stream's events")
	runs := scriptRuns(t, runsDir)
	var ran []string
	for _, e := range stream.all() {
		if run, ok := runs[e.ID]; ok {
			ran = append(ran, strings.Fields(run[1])[0])
		}
	}
	if !slices.Equal(ran, want) || len(runs) != len(want) {
		t.Errorf("the script ran for %v (%d runs), the stream has %v: want the same, each once", ran, len(runs), want)
	}
	for _, kind := range []string{"backend_set", "backend_added", "source_failed", "source_recovered"} {
		if !slices.Contains(want, kind) {
			t.Errorf("no %s among the events %v", kind, want)
		}
	}
}
