package test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/healthdns/healthdns/test/harness"
)

// statusDoc is the part of /status.json the tests read.
type statusDoc struct {
	Version   int `json:"version"`
	HealthDNS struct {
		Version    string `json:"version"`
		ConfigHash string `json:"config_hash"`
	} `json:"healthdns"`
	Checker struct {
		Stalled bool `json:"stalled"`
		Loops   []struct {
			Wire     string `json:"wire"`
			Targets  int    `json:"targets"`
			LastTick string `json:"last_tick"`
		} `json:"loops"`
	} `json:"checker"`
	Pools []struct {
		Zone     string `json:"zone"`
		Backends []struct {
			Address string `json:"address"`
			State   string `json:"state"`
			Reason  string `json:"reason"`
			Error   string `json:"error"`
			Answers int    `json:"answers"`
		} `json:"backends"`
	} `json:"pools"`
}

func fetchStatus(t *testing.T, url string) (statusDoc, error) {
	t.Helper()
	var doc statusDoc
	c := &http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return doc, err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return doc, fmt.Errorf("%s: %s", resp.Status, body)
	}
	return doc, json.Unmarshal(body, &doc)
}

// backendState is the state, reason and error /status.json gives ip in its first pool.
func (d statusDoc) backend(ip string) (state, reason, text string) {
	for _, p := range d.Pools {
		for _, b := range p.Backends {
			if b.Address == ip {
				return b.State, b.Reason, b.Error
			}
		}
	}
	return "", "", ""
}

// TestStatusJSON reads /status.json from the real binary: the schema's version, each backend's
// state, a stopped backend going down with its reason, the checker's loops; a reload keeps the
// listener (the same port answers with the new configuration, and nothing says "address already
// in use"); and the checker's last tick is exported.
func TestStatusJSON(t *testing.T) {
	t.Parallel()
	const live, stopped, added = "127.0.0.230", "127.0.0.231", "127.0.0.232"
	port, backends := harness.StartBackends(t, live, stopped, added)
	statusAddr := "127.0.0.1:" + strconv.Itoa(harness.FreePort(t))
	conf := func(ips ...string) string {
		return ".:{{PORT}} {\n bind 127.0.0.1\n prometheus {{METRICS}}\n" +
			harness.TCPPool("status.lan", port, "200ms", "100ms", ips, "answers 8", "status "+statusAddr) + "}\n"
	}
	s := harness.Start(t, conf(live, stopped))
	url := "http://" + statusAddr + "/status.json"

	var doc statusDoc
	harness.Eventually(t, 5*time.Second, func() bool {
		var err error
		doc, err = fetchStatus(t, url)
		st1, _, _ := doc.backend(live)
		st2, _, _ := doc.backend(stopped)
		return err == nil && st1 == "up" && st2 == "up"
	}, "both backends up in /status.json")
	if doc.Version != 1 || !strings.Contains(doc.HealthDNS.Version, "+healthdns-") || doc.HealthDNS.ConfigHash == "" {
		t.Errorf("version %d, healthdns %+v", doc.Version, doc.HealthDNS)
	}
	if len(doc.Pools) != 1 || doc.Pools[0].Zone != "status.lan." {
		t.Errorf("pools %+v", doc.Pools)
	}
	if doc.Checker.Stalled || len(doc.Checker.Loops) == 0 || doc.Checker.Loops[0].LastTick == "" {
		t.Errorf("checker %+v", doc.Checker)
	}

	backends[stopped].Stop()
	harness.Eventually(t, 5*time.Second, func() bool {
		doc, _ = fetchStatus(t, url)
		st, _, _ := doc.backend(stopped)
		return st == "down"
	}, "the stopped backend down in /status.json")
	if _, reason, text := doc.backend(stopped); reason != "refused" || text != fmt.Sprintf("tcp :%d: connection refused", port) {
		t.Errorf("stopped backend: reason %q, text %q; want refused, tcp :%d: connection refused", reason, text, port)
	}
	if st, _, _ := doc.backend(live); st != "up" {
		t.Errorf("the live backend is %s", st)
	}
	before := doc.HealthDNS.ConfigHash

	m := s.Scrape(t)
	if found := m.Find("coredns_healthdns_checker_last_tick_timestamp_seconds", nil); len(found) == 0 {
		t.Error("no coredns_healthdns_checker_last_tick_timestamp_seconds series")
	} else if age := time.Since(time.Unix(int64(found[0].Value), 0)); age > time.Minute {
		t.Errorf("last tick %v ago", age)
	}

	mark := len(s.Output())
	if err := s.Reload(t, conf(live, stopped, added)); err != nil {
		t.Fatal(err)
	}
	harness.Eventually(t, 5*time.Second, func() bool {
		doc, _ = fetchStatus(t, url)
		st, _, _ := doc.backend(added)
		return st == "up"
	}, "the added backend up on the same status port after the reload")
	if doc.HealthDNS.ConfigHash == before {
		t.Errorf("the configuration hash %s did not change with the configuration", before)
	}
	if st, reason, _ := doc.backend(stopped); st != "down" || reason != "refused" {
		t.Errorf("the stopped backend after the reload: %s %s; the reload kept its monitor and should keep its state", st, reason)
	}
	if out := s.Output()[mark:]; strings.Contains(out, "address already in use") {
		t.Errorf("the reload opened the status listener again:\n%s", out)
	}
	if !s.Alive() {
		t.Fatal("coredns exited")
	}
}

// pageShows loads the status page at url in headless Chromium until its DOM holds every one of
// want, and fails the test with the DOM if it does not within 60 s. Without Chromium it says
// that the page is not checked, and returns.
func pageShows(t *testing.T, url string, want ...string) {
	t.Helper()
	bin, err := exec.LookPath("chromium")
	if err != nil {
		t.Log("no chromium on $PATH (Debian's chromium package; .ci/run installs it as root): the page is not checked")
		return
	}
	var dom string
	if !harness.Poll(60*time.Second, 100*time.Millisecond, func() bool {
		// A listener with a token cannot inline its document: the page fetches it, after the
		// load event at which a plain --dump-dom would dump the DOM.
		dom, err = chromium(t, bin, "--virtual-time-budget=3000", "--dump-dom", url)
		return err == nil && !slices.ContainsFunc(want, func(w string) bool { return !strings.Contains(dom, w) })
	}) {
		t.Errorf("the page did not show %q within 60s (chromium: %v); its DOM:\n%s", want, err, dom)
	}
}

// chromium runs headless Chromium with args, and kills its whole process group at the end:
// it forks helpers that outlive a killed parent.
func chromium(t *testing.T, bin string, args ...string) (string, error) {
	t.Helper()
	profile := t.TempDir()
	all := append([]string{"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
		"--user-data-dir=" + profile}, args...)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, all...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if cmd.Process != nil {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) // helpers left behind, if any
	}
	if err != nil {
		return string(out), fmt.Errorf("%v: %s", err, harness.LastLine(stderr.String()))
	}
	return string(out), nil
}

// rowOf returns the HTML of the row of backend ip in a dumped page.
func rowOf(dom, ip string) string {
	m := regexp.MustCompile(`<tr[^>]*data-backend="` + regexp.QuoteMeta(ip) + `"[^>]*>.*?</tr>`).FindString(dom)
	return m
}

// TestStatusPageInBrowser loads the status page in headless Chromium (Debian's chromium, which
// .ci/run installs; without it the test skips), stops a backend, and waits for the page to show
// its row down with its reason; then it writes a phone-sized screenshot outside the repository.
func TestStatusPageInBrowser(t *testing.T) {
	t.Parallel()
	bin, err := exec.LookPath("chromium")
	if err != nil {
		t.Skip("no chromium on $PATH (Debian's chromium package; .ci/run installs it as root): the status page is not tested in a browser")
	}
	const live, stopped = "127.0.0.233", "127.0.0.234"
	port, backends := harness.StartBackends(t, live, stopped)
	statusAddr := "127.0.0.1:" + strconv.Itoa(harness.FreePort(t))
	harness.Start(t, ".:{{PORT}} {\n bind 127.0.0.1\n"+
		harness.TCPPool("browser.lan", port, "200ms", "100ms", []string{live, stopped}, "status "+statusAddr)+"}\n")
	url := "http://" + statusAddr + "/"

	var dom string
	if !harness.Poll(60*time.Second, 100*time.Millisecond, func() bool {
		dom, err = chromium(t, bin, "--dump-dom", url)
		return err == nil && strings.Contains(rowOf(dom, stopped), `data-state="up"`) && strings.Contains(rowOf(dom, live), `data-state="up"`)
	}) {
		t.Fatalf("the page did not show both backends up within 60s (chromium: %v); its DOM:\n%s", err, dom)
	}

	backends[stopped].Stop()
	if !harness.Poll(60*time.Second, 100*time.Millisecond, func() bool {
		dom, err = chromium(t, bin, "--dump-dom", url)
		row := rowOf(dom, stopped)
		return err == nil && strings.Contains(row, `data-state="down"`) && strings.Contains(row, ">refused<") &&
			strings.Contains(row, fmt.Sprintf("tcp :%d: connection refused", port))
	}) {
		t.Fatalf("the page did not show the stopped backend down, refused, within 60s (chromium: %v); its row: %s", err, rowOf(dom, stopped))
	}
	if !strings.Contains(rowOf(dom, live), `data-state="up"`) {
		t.Errorf("the live backend's row: %s", rowOf(dom, live))
	}
	if !regexp.MustCompile(`<div[^>]*id="stalled"[^>]*hidden`).MatchString(dom) {
		t.Errorf("the stalled banner shows on a running checker")
	}

	shot := filepath.Join(os.TempDir(), fmt.Sprintf("healthdns-status-%d.png", time.Now().UnixNano()))
	if _, err := chromium(t, bin, "--screenshot="+shot, "--window-size=412,915", "--hide-scrollbars", url); err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	if fi, err := os.Stat(shot); err != nil || fi.Size() == 0 {
		t.Fatalf("no screenshot at %s: %v", shot, err)
	}
	t.Logf("phone-sized screenshot of the status page: %s", shot)
}

// groupsDoc is the part of /status.json that says what priority groups do.
type groupsDoc struct {
	Pools []struct {
		Zone     string `json:"zone"`
		Families []struct {
			Family            string `json:"family"`
			ServingPriority   int    `json:"serving_priority"`
			HealthyPriorities []int  `json:"healthy_priorities"`
			PreemptWait       *struct {
				Group int       `json:"group"`
				Until time.Time `json:"until"`
			} `json:"preempt_wait"`
		} `json:"families"`
		Backends []struct {
			Address  string `json:"address"`
			State    string `json:"state"`
			Priority int    `json:"priority"`
			Weight   int    `json:"weight"`
		} `json:"backends"`
	} `json:"pools"`
}

// startTLSWeb serves /healthz over TLS (httptest's own certificate) on ip:port.
func startTLSWeb(t *testing.T, ip string, port int) {
	t.Helper()
	ln, err := net.Listen("tcp", net.JoinHostPort(ip, strconv.Itoa(port)))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok\n") }))
	srv.Listener.Close()
	srv.Listener = ln
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	srv.StartTLS()
	t.Cleanup(srv.Close)
}

// TestStatusPageGroupsInBrowser runs the real binary with what an operator of priority groups
// watches: db.lan under nopreempt, served by its standby after its primary died and came back;
// web.lan under preempt_delay, whose primary is back and waits out its delay, with a drained
// backend, a dead one, and tcp and https checks (host, tls_insecure). /status.json says which
// group serves, which are healthy, and when a waiting one takes back; the page, in headless
// Chromium, says the same in words, and desktop- and phone-sized screenshots are written to
// $HEALTHDNS_SCREENSHOTS (or the test's temporary directory) for a person to look at.
func TestStatusPageGroupsInBrowser(t *testing.T) {
	t.Parallel()
	bin, err := exec.LookPath("chromium")
	if err != nil {
		t.Skip("no chromium on $PATH (Debian's chromium package; .ci/run installs it as root): the status page is not tested in a browser")
	}
	const dbPrimary, dbStandby = "127.0.4.1", "127.0.4.2"
	const webPrimary, webStandby, webDrained, webDead = "127.0.4.11", "127.0.4.12", "127.0.4.13", "127.0.4.14"
	port, backends := harness.StartBackends(t, dbPrimary, dbStandby, webPrimary, webStandby, webDrained)
	tlsPort := harness.FreePort(t, webPrimary, webStandby, webDrained, webDead)
	for _, ip := range []string{webPrimary, webStandby, webDrained} {
		startTLSWeb(t, ip, tlsPort)
	}
	statusAddr := "127.0.0.1:" + strconv.Itoa(harness.FreePort(t))
	s := harness.Start(t, ".:{{PORT}} {\n bind 127.0.0.1\n"+
		harness.Pool("db.lan", nil, "backend "+dbPrimary+" priority 200", "backend "+dbStandby+" priority 100",
			fmt.Sprintf("check tcp %d", port), "interval 200ms", "timeout 100ms", "nopreempt", "status "+statusAddr)+
		harness.Pool("web.lan", nil, "backend "+webPrimary+" priority 200 weight 3", "backend "+webStandby+" weight 2",
			"backend "+webDrained+" drain kernel upgrade", "backend "+webDead,
			fmt.Sprintf("check tcp %d", port), fmt.Sprintf("check https %d /healthz host web.lan", tlsPort), "tls_insecure",
			// A TLS handshake under -race on a busy machine can take 100ms: a flap of the standby
			// group would hand web.lan back to its primary at once and end the wait shown.
			"policy weighted", "preempt_delay 10m", "interval 500ms", "timeout 450ms", "fall 3", "status "+statusAddr)+"}\n")
	url := "http://" + statusAddr + "/"

	state := func(doc statusDoc, ip string) string { st, _, _ := doc.backend(ip); return st }
	var doc statusDoc
	harness.Eventually(t, 10*time.Second, func() bool {
		doc, err = fetchStatus(t, url+"status.json")
		return err == nil && state(doc, dbPrimary) == "up" && state(doc, webPrimary) == "up" && state(doc, webStandby) == "up" && state(doc, webDead) == "down"
	}, "the primaries and web.lan's standby up, its dead backend down")
	backends[dbPrimary].Stop()
	backends[webPrimary].Stop()
	harness.Eventually(t, 10*time.Second, func() bool {
		doc, err = fetchStatus(t, url+"status.json")
		return err == nil && state(doc, dbPrimary) == "down" && state(doc, webPrimary) == "down"
	}, "both primaries down")
	for range 3 {
		s.Addrs(t, "udp", "db.lan.", dns.TypeA)
	}
	s.Addrs(t, "udp", "web.lan.", dns.TypeA)
	backends[dbPrimary].Start()
	backends[webPrimary].Start()
	back := time.Now()
	var groups groupsDoc
	harness.Eventually(t, 10*time.Second, func() bool {
		groups = groupsDoc{}
		resp, err := http.Get(url + "status.json")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		if json.NewDecoder(resp.Body).Decode(&groups) != nil || len(groups.Pools) != 2 {
			return false
		}
		for _, p := range groups.Pools {
			if len(p.Families) != 1 || !slices.Equal(p.Families[0].HealthyPriorities, []int{200, 100}) {
				return false
			}
		}
		return true
	}, "both primaries healthy again, in each pool's ipv4 groups")
	for _, p := range groups.Pools {
		f := p.Families[0]
		if f.ServingPriority != 100 {
			t.Errorf("%s: served by %d; want the standby serving after the primary came back", p.Zone, f.ServingPriority)
		}
		switch p.Zone {
		case "db.lan.":
			if f.PreemptWait != nil {
				t.Errorf("db.lan under nopreempt waits for %+v; it waits for an operator", f.PreemptWait)
			}
		case "web.lan.":
			if w := f.PreemptWait; w == nil || w.Group != 200 || w.Until.Before(back.Add(9*time.Minute)) || w.Until.After(time.Now().Add(10*time.Minute)) {
				t.Errorf("web.lan's preempt_wait %+v; want group 200 taking back 10 minutes after it came back at %s", w, back.Format(time.RFC3339Nano))
			}
			if b := p.Backends[0]; b.Address != webPrimary || b.Priority != 200 || b.Weight != 3 {
				t.Errorf("web.lan's primary %+v", b)
			}
		}
	}

	dom, err := chromium(t, bin, "--dump-dom", url)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		`data-groups="ipv4 failback">ipv4 served by group 100 of 200/100: group 200 is healthy again and serves only after a fail-back (nopreempt)<`,
		`data-groups="ipv4 waiting"`,
		": group 200 takes back by itself at ",
		fmt.Sprintf("tcp :%d + https :%d/healthz host web.lan tls_insecure, every 500 ms", port, tlsPort),
		fmt.Sprintf(`data-check="https :%d/healthz">https :%d/healthz: `, tlsPort, tlsPort),
		`<th>Priority</th><th>Weight</th>`,
	} {
		if !strings.Contains(dom, want) {
			t.Errorf("the page has no %s", want)
		}
	}
	if r := rowOf(dom, webDead); !strings.Contains(r, ">refused<") || !strings.Contains(r, fmt.Sprintf(">refused https :%d/healthz: connection refused<", tlsPort)) {
		t.Errorf("the dead backend's row: %s", r)
	}
	if r := rowOf(dom, dbStandby); !regexp.MustCompile(`data-answers="[1-9]\d*">\d+ answers?<`).MatchString(r) {
		t.Errorf("db.lan's standby's row: %s", r)
	}

	dir := os.Getenv("HEALTHDNS_SCREENSHOTS")
	if dir == "" {
		dir = t.TempDir()
	}
	for _, size := range []struct{ name, window string }{{"desktop", "1200,1000"}, {"phone", "390,2100"}} {
		shot := filepath.Join(dir, size.name+".png")
		if _, err := chromium(t, bin, "--screenshot="+shot, "--window-size="+size.window, "--hide-scrollbars", url); err != nil {
			t.Fatalf("screenshot: %v", err)
		}
		if fi, err := os.Stat(shot); err != nil || fi.Size() == 0 {
			t.Fatalf("no screenshot at %s: %v", shot, err)
		}
		t.Logf("%s screenshot of the status page: %s", size.name, shot)
	}
}
