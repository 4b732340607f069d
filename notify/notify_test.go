package notify

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"

	"github.com/healthdns/healthdns/event"
)

// Every goroutine a target starts ends with the last lease on it.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const (
	server = "dns://:53"
	zone   = "app.lan."
)

// receiver is an HTTP endpoint that keeps what it is sent, answering with status.
type receiver struct {
	mu     sync.Mutex
	status int
	hang   chan struct{} // closed to let hanging requests go; nil: answer at once
	bodies [][]byte
	auth   []string
	types  []string
}

func (r *receiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	body, _ := io.ReadAll(req.Body)
	r.mu.Lock()
	r.bodies = append(r.bodies, body)
	r.auth = append(r.auth, req.Header.Get("Authorization"))
	r.types = append(r.types, req.Header.Get("Content-Type"))
	status, hang := r.status, r.hang
	r.mu.Unlock()
	if hang != nil {
		select {
		case <-hang:
		case <-req.Context().Done():
		}
	}
	w.WriteHeader(status)
}

func (r *receiver) received() (bodies [][]byte, auth, types []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([][]byte(nil), r.bodies...), append([]string(nil), r.auth...), append([]string(nil), r.types...)
}

func waitFor(t *testing.T, what string, ok func() bool) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); !ok(); {
		if time.Now().After(deadline) {
			t.Fatalf("no %s after 20s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func seqs(t *testing.T, bodies [][]byte) []uint64 {
	t.Helper()
	var out []uint64
	for _, b := range bodies {
		var e event.Event
		if err := json.Unmarshal(b, &e); err != nil {
			t.Fatalf("a body is not an event: %v: %s", err, b)
		}
		out = append(out, e.Seq)
	}
	return out
}

// TestHTTPDelivers: one POST per event of the target's zone and kinds, in order, as JSON with
// the bearer token; another zone's events and other kinds are not sent.
func TestHTTPDelivers(t *testing.T) {
	rcv := &receiver{status: http.StatusOK}
	ts := httptest.NewServer(rcv)
	defer ts.Close()
	bus := event.NewBus("test", nil)
	hub := NewHub(NewMetrics())
	lease := hub.Acquire(bus, []Scope{{Server: server, Zone: zone, Targets: []Target{
		{Channel: HTTP, URL: ts.URL, Token: "0123456789abcdef", Timeout: time.Second, Kinds: []event.Kind{event.BackendDown, event.BackendUp}},
	}}})
	defer lease.Release()
	bus.Publish(event.Event{Kind: event.BackendDown, Server: server, Zone: zone, Backend: "10.0.0.1"})         // 1
	bus.Publish(event.Event{Kind: event.BackendDown, Server: server, Zone: "other.lan.", Backend: "10.0.0.2"}) // 2: another zone
	bus.Publish(event.Event{Kind: event.BackendDrained, Server: server, Zone: zone, Backend: "10.0.0.1"})      // 3: not wanted
	bus.Publish(event.Event{Kind: event.BackendUp, Server: server, Zone: zone, Backend: "10.0.0.1"})           // 4
	waitFor(t, "two POSTs", func() bool { b, _, _ := rcv.received(); return len(b) >= 2 })
	lease.Release()
	bodies, auth, types := rcv.received()
	if got := seqs(t, bodies); len(got) != 2 || got[0] != 1 || got[1] != 4 {
		t.Errorf("POSTed events %v, want 1 and 4", got)
	}
	for i := range auth {
		if auth[i] != "Bearer 0123456789abcdef" || types[i] != "application/json" {
			t.Errorf("request %d: Authorization %q, Content-Type %q", i, auth[i], types[i])
		}
	}
}

// TestHTTPRetries: a receiver answering 500 gets the event Attempts times, each failure counted.
func TestHTTPRetries(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for the backoff: 7 s")
	}
	rcv := &receiver{status: http.StatusInternalServerError}
	ts := httptest.NewServer(rcv)
	defer ts.Close()
	bus := event.NewBus("test", nil)
	m := NewMetrics()
	lease := NewHub(m).Acquire(bus, []Scope{{Server: server, Zone: zone, Targets: []Target{{Channel: HTTP, URL: ts.URL, Timeout: time.Second}}}})
	defer lease.Release()
	bus.Publish(event.Event{Kind: event.AllDown, Server: server, Zone: zone})
	waitFor(t, "4 attempts counted", func() bool { return testutil.ToFloat64(m.Failures.WithLabelValues(HTTP)) == Attempts })
	if b, _, _ := rcv.received(); len(b) != Attempts {
		t.Errorf("%d POSTs, want %d", len(b), Attempts)
	}
}

// TestHangingReceiverDrops: a receiver that never answers holds one event; the queue fills and
// what comes past it is dropped and counted, while Publish never waits. Release ends the
// hanging request.
func TestHangingReceiverDrops(t *testing.T) {
	rcv := &receiver{status: http.StatusOK, hang: make(chan struct{})}
	ts := httptest.NewServer(rcv)
	defer ts.Close()
	defer close(rcv.hang)
	bus := event.NewBus("test", nil)
	m := NewMetrics()
	hub := NewHub(m)
	lease := hub.Acquire(bus, []Scope{{Server: server, Zone: zone, Targets: []Target{{Channel: HTTP, URL: ts.URL, Timeout: time.Hour}}}})
	bus.Publish(event.Event{Kind: event.BackendDown, Server: server, Zone: zone})
	waitFor(t, "the first POST", func() bool { b, _, _ := rcv.received(); return len(b) == 1 })
	const more = QueueSize + 50
	for i := range more {
		bus.Publish(event.Event{Kind: event.BackendUp, Server: server, Zone: zone})
		// The dispatcher must keep up with the bus for the count to be exact: the bus's own
		// buffer drops are counted too, but the bound tested is the queue's.
		waitFor(t, "the event taken", func() bool {
			return testutil.ToFloat64(m.QueueDepth.WithLabelValues(HTTP))+testutil.ToFloat64(m.Dropped.WithLabelValues(HTTP)) >= float64(i+1)
		})
	}
	if got := testutil.ToFloat64(m.QueueDepth.WithLabelValues(HTTP)); got != QueueSize {
		t.Errorf("queue depth %v, want %d", got, QueueSize)
	}
	if got := testutil.ToFloat64(m.Dropped.WithLabelValues(HTTP)); got != more-QueueSize {
		t.Errorf("dropped %v, want %d", got, more-QueueSize)
	}
	lease.Release()
	if hub.Running() != 0 || testutil.ToFloat64(m.QueueDepth.WithLabelValues(HTTP)) != 0 {
		t.Errorf("after Release: %d targets running, queue depth %v", hub.Running(), testutil.ToFloat64(m.QueueDepth.WithLabelValues(HTTP)))
	}
}

// TestReloadKeepsTarget: a second lease on the same line (a reload's new instance) shares its
// target; releasing the first does not stop it, and nothing published meanwhile is lost or
// sent twice. A line the reload dropped stops.
func TestReloadKeepsTarget(t *testing.T) {
	rcv := &receiver{status: http.StatusOK}
	ts := httptest.NewServer(rcv)
	defer ts.Close()
	gone := &receiver{status: http.StatusOK}
	tsGone := httptest.NewServer(gone)
	defer tsGone.Close()
	bus := event.NewBus("test", nil)
	hub := NewHub(NewMetrics())
	kept := Target{Channel: HTTP, URL: ts.URL, Timeout: time.Second}
	dropped := Target{Channel: HTTP, URL: tsGone.URL, Timeout: time.Second}
	old := hub.Acquire(bus, []Scope{{Server: server, Zone: zone, Targets: []Target{kept, dropped}}})
	bus.Publish(event.Event{Kind: event.BackendDown, Server: server, Zone: zone}) // 1
	next := hub.Acquire(bus, []Scope{{Server: server, Zone: zone, Targets: []Target{kept}}})
	bus.Publish(event.Event{Kind: event.BackendUp, Server: server, Zone: zone}) // 2: during the reload
	old.Release()
	bus.Publish(event.Event{Kind: event.BackendDown, Server: server, Zone: zone}) // 3: after
	if hub.Running() != 1 {
		t.Errorf("%d targets running after the reload, want 1", hub.Running())
	}
	waitFor(t, "three POSTs", func() bool { b, _, _ := rcv.received(); return len(b) >= 3 })
	next.Release()
	bodies, _, _ := rcv.received()
	if got := seqs(t, bodies); len(got) != 3 || got[0] != 1 || got[1] != 2 || got[2] != 3 {
		t.Errorf("the kept target got %v, want 1 2 3", got)
	}
	if b, _, _ := gone.received(); len(seqs(t, b)) > 2 {
		t.Errorf("the dropped target got %v after its release", seqs(t, b))
	}
}

// TestExecDelivers: a script gets each event's JSON on stdin, its fields in the environment and
// its arguments expanded, in order; one that fails is logged and counted, one that hangs is
// killed at its timeout, and a slow script of one zone does not delay another zone's.
func TestExecDelivers(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("a shell script")
	}
	dir := t.TempDir()
	out := filepath.Join(dir, "out")
	script := filepath.Join(dir, "notify.sh")
	writeScript(t, script, `#!/bin/sh
case "$HEALTHDNS_BACKEND" in 10.0.0.9) sleep 600 ;; 10.0.0.8) echo "no such service" ; exit 3 ;; esac
{ printf '%s|' "$@" "$HEALTHDNS_EVENT" "$HEALTHDNS_ZONE" "$HEALTHDNS_STATE" "$HEALTHDNS_GROUP"; cat; echo; } >> "$1"
`)
	bus := event.NewBus("test", nil)
	m := NewMetrics()
	target := Target{Channel: Exec, Path: script, Args: []string{out, "{zone}", "{backend}", "{event}", "{state}", "{group}"}, Timeout: 2 * time.Second}
	slow := "slow.lan."
	lease := NewHub(m).Acquire(bus, []Scope{{Server: server, Zone: zone, Targets: []Target{target}}, {Server: server, Zone: slow, Targets: []Target{target}}})
	defer lease.Release()
	bus.Publish(event.Event{Kind: event.BackendDown, Server: server, Zone: slow, Backend: "10.0.0.9"}) // hangs its zone's queue
	bus.Publish(event.Event{Kind: event.BackendDown, Server: server, Zone: zone, Backend: "10.0.0.8"}) // fails
	bus.Publish(event.Event{Kind: event.BackendUp, Server: server, Zone: zone, Backend: "10.0.0.1"})
	bus.Publish(event.Event{Kind: event.GroupSwitched, Server: server, Zone: zone, From: event.Group(100), To: event.Group(50), Family: "ipv4"})
	lines := func() []string {
		data, _ := os.ReadFile(out)
		return strings.Split(strings.TrimSpace(string(data)), "\n")
	}
	waitFor(t, "two runs written", func() bool { l := lines(); return len(l) == 2 && strings.HasSuffix(l[1], "}") })
	got := lines()
	for i, want := range []string{
		out + "|app.lan.|10.0.0.1|backend_up|up||backend_up|app.lan.|up||{",
		out + "|app.lan.||group_switched|serving|50|group_switched|app.lan.|serving|50|{",
	} {
		if !strings.HasPrefix(got[i], want) {
			t.Errorf("run %d wrote %q, want it to begin %q", i, got[i], want)
		}
	}
	var e event.Event
	if err := json.Unmarshal([]byte(got[1][strings.Index(got[1], "{"):]), &e); err != nil || e.Seq != 4 || *e.To != 50 {
		t.Errorf("the second run's stdin %q is not event 4: %v", got[1], err)
	}
	waitFor(t, "the failing run and the hanging one counted", func() bool { return testutil.ToFloat64(m.Failures.WithLabelValues(Exec)) == 2 })
}

func writeScript(t *testing.T, path, text string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(text), 0o755); err != nil {
		t.Fatal(err)
	}
}
