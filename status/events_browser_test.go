//go:build unix

package status

import (
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/healthdns/healthdns/event"
	"github.com/healthdns/healthdns/health"
)

// The page follows the event stream: it lists the events the ring holds when it loads, and one
// published while it is open arrives without a reload. In a real browser (headless Chromium; the test skips without
// it). The screenshot is left outside the
// repository (HEALTHDNS_SCREENSHOTS, or the test's temporary directory) for a person to look at.
func TestStatusPageFollowsEventsInBrowser(t *testing.T) {
	bin, err := exec.LookPath("chromium")
	if err != nil {
		t.Skip("no chromium on $PATH (Debian's chromium package; .ci/run installs it as root): the page is not tested in a browser")
	}
	cfg := testConfig("app.lan.", "10.0.0.1", "10.0.0.2")
	pools := statusPools(t, map[string]bool{"10.0.0.2": true}, cfg)
	bus := event.NewBus("test", nil)
	v := &View{Pools: shown(pools...), Loops: func() []health.LoopStatus { return nil }, Events: bus,
		Process: Process{Version: "1.14.7", Started: time.Now().Add(-26 * time.Hour)}}
	bus.Publish(event.Event{Kind: event.BackendDown, Server: cfg.Server, Zone: cfg.Zone, Backend: "10.0.0.2", Check: "tcp :80", Reason: "refused", Error: "tcp :80: connection refused"})
	bus.Publish(event.Event{Kind: event.BackendDrained, Server: cfg.Server, Zone: cfg.Zone, Backend: "10.0.0.1", Reason: "patching", By: "api 127.0.0.1:5000"})

	// Once the page's stream has brought the two events kept, a third: one the page can only get
	// from the open stream, since it was published after the page loaded.
	// The screenshot's load, the second, gets one of its own: the operator's fail-back.
	var loads atomic.Int32
	live := func() {
		if loads.Add(1) == 1 {
			bus.Publish(event.Event{Kind: event.GroupSwitched, Server: cfg.Server, Zone: cfg.Zone, Family: "ipv4",
				From: event.Group(200), To: event.Group(100), Why: "group 200 has no healthy backend"})
			return
		}
		bus.Publish(event.Event{Kind: event.GroupSwitched, Server: cfg.Server, Zone: cfg.Zone, Family: "ipv4",
			From: event.Group(100), To: event.Group(200), Why: "fail-back by 127.0.0.1:5000 via the status API", By: "api 127.0.0.1:5000"})
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/api/v1/events" {
			w = &afterBacklog{ResponseWriter: w, then: live}
		}
		v.ServeHTTP(w, r)
	}))
	defer srv.Close()

	dom := runChromium(t, bin, "--virtual-time-budget=3000", "--dump-dom", srv.URL+"/")
	rows := regexp.MustCompile(`<tr[^>]*data-kind="([a-z_]+)"[^>]*>`).FindAllStringSubmatch(dom, -1)
	var kinds []string
	for _, r := range rows {
		kinds = append(kinds, r[1])
	}
	if got := strings.Join(kinds, " "); got != "group_switched backend_drained backend_down" {
		t.Errorf("the page lists events %q, want the live group_switched above the two it found", got)
	}
	if live := regexp.MustCompile(`(?s)<tr[^>]*data-kind="group_switched"[^>]*>.*?</tr>`).FindString(dom); !strings.Contains(live, "ipv4 group 200 → 100") || !strings.Contains(live, `class="fresh"`) {
		t.Errorf("the live event's row: %s", live)
	}
	dir := os.Getenv("HEALTHDNS_SCREENSHOTS")
	if dir == "" {
		dir = t.TempDir()
	}
	shot := filepath.Join(dir, "status-events.png")
	runChromium(t, bin, "--window-size=1100,800", "--timeout=3000", "--screenshot="+shot, srv.URL+"/")
	if fi, err := os.Stat(shot); err != nil || fi.Size() == 0 {
		t.Errorf("no screenshot at %s: %v", shot, err)
	}
	t.Logf("screenshot: %s", shot)
}

// afterBacklog calls then once the stream has written its second event.
type afterBacklog struct {
	http.ResponseWriter
	once sync.Once
	then func()
}

func (a *afterBacklog) Write(p []byte) (int, error) {
	n, err := a.ResponseWriter.Write(p)
	if strings.Contains(string(p), "id: 2\n") {
		a.once.Do(func() { go a.then() })
	}
	return n, err
}

func (a *afterBacklog) Unwrap() http.ResponseWriter { return a.ResponseWriter }
