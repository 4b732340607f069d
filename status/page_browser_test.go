//go:build unix

package status

import (
	"net/http"
	"net/http/httptest"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/healthdns/healthdns/health"
)

// A stalled probe loop shows as a banner on the page, in a real browser (headless Chromium;
// the test skips without it), and a down backend shows its reason.
func TestStatusPageBannerInBrowser(t *testing.T) {
	bin, err := exec.LookPath("chromium")
	if err != nil {
		t.Skip("no chromium on $PATH (Debian's chromium package; .ci/run installs it as root): the page is not tested in a browser")
	}
	pools := statusPools(t, map[string]bool{"10.0.0.2": true}, testConfig("app.lan.", "10.0.0.1", "10.0.0.2"))
	v := &View{Pools: shown(pools...), Loops: func() []health.LoopStatus {
		return []health.LoopStatus{{Wire: "tcp_syn", Running: true, Targets: 2, Interval: time.Second, LastTick: time.Now().Add(-42 * time.Second), Stalled: true}}
	}}
	srv := httptest.NewServer(v)
	defer srv.Close()

	dom := runChromium(t, bin, "--dump-dom", srv.URL+"/")
	banner := regexp.MustCompile(`<div[^>]*id="stalled"[^>]*>([^<]*)</div>`).FindStringSubmatch(dom)
	if banner == nil || strings.Contains(banner[0], "hidden") || !strings.Contains(banner[1], "Checker stalled: the tcp_syn loop has not ticked for 42 s") {
		t.Errorf("the stalled banner: %q", banner)
	}
	row := regexp.MustCompile(`<tr[^>]*data-backend="10.0.0.2"[^>]*>.*?</tr>`).FindString(dom)
	if !strings.Contains(row, `data-state="down"`) || !strings.Contains(row, ">refused<") || !strings.Contains(row, "tcp :80: connection refused") {
		t.Errorf("the down backend's row: %s", row)
	}
}

// The page shows an operator of priority groups what the groups do: each backend's priority
// and weight; a standby that serves until a fail-back (nopreempt, red) apart from one whose
// primary takes back by itself (preempt_delay, amber, with when); each check's figures under
// its name; the check line with host and tls_insecure; a count's plural. In a real browser
// (headless Chromium; the test skips without it), read from its DOM.
func TestStatusPageGroupsInBrowser(t *testing.T) {
	bin, err := exec.LookPath("chromium")
	if err != nil {
		t.Skip("no chromium on $PATH (Debian's chromium package; .ci/run installs it as root): the page is not tested in a browser")
	}
	srv := httptest.NewServer(groupsView(t, ""))
	defer srv.Close()
	dom := runChromium(t, bin, "--dump-dom", srv.URL+"/")
	section := func(zone string) string {
		return regexp.MustCompile(`(?s)<section data-zone="` + regexp.QuoteMeta(zone) + `">.*?</section>`).FindString(dom)
	}
	db, web := section("db.lan."), section("web.lan.")

	heads := regexp.MustCompile(`<th>([^<]*)</th>`).FindAllStringSubmatch(web, -1)
	var names []string
	for _, h := range heads {
		names = append(names, h[1])
	}
	if got := strings.Join(names, " "); got != "Backend Priority Weight State Last check Changes Reason" {
		t.Errorf("web.lan's columns: %s", got)
	}
	if r := rowOf(web, "10.0.1.1"); !strings.Contains(r, `data-priority="200">200<`) || !strings.Contains(r, `data-weight="3">3<`) {
		t.Errorf("the primary's priority and weight: %s", r)
	}
	if r := rowOf(db, "10.0.0.2"); !strings.Contains(r, `data-priority="100">100<span class="small"> serving</span>`) || !strings.Contains(r, `class="pw num ignored"`) {
		t.Errorf("db.lan's standby serves, and round_robin ignores its weight: %s", r)
	}
	for _, addr := range []string{"10.0.1.3", "10.0.1.4"} { // of the serving group, drained and down
		if r := rowOf(web, addr); strings.Contains(r, "serving") {
			t.Errorf("a backend out of service is shown serving: %s", r)
		}
	}

	chip := func(sec, kind string) string {
		return regexp.MustCompile(`<span class="([^"]*)" data-groups="ipv4 ` + kind + `"[^>]*>([^<]*)</span>`).FindString(sec)
	}
	if c := chip(db, "failback"); !strings.Contains(c, `class="chip bad"`) ||
		!strings.Contains(c, "ipv4 served by group 100 of 200/100: group 200 is healthy again and serves only after a fail-back (nopreempt)") {
		t.Errorf("db.lan's group chip: %q", c)
	}
	if c := chip(web, "waiting"); !strings.Contains(c, `class="chip wait"`) ||
		!regexp.MustCompile(`ipv4 served by group 100 of 200/100: group 200 takes back by itself at [^<]+ \(in (59|60) min, preempt_delay 1h0m0s\)`).MatchString(c) {
		t.Errorf("web.lan's group chip: %q in\n%s", c, web)
	}

	if !strings.Contains(web, `tcp :8080 + https :443/healthz body_exact "ok" host web.lan tls_insecure, every `) {
		t.Errorf("web.lan's check line: %s", regexp.MustCompile(`<div class="meta" data-checks[^>]*>[^<]*</div>`).FindString(web))
	}
	standby := rowOf(web, "10.0.1.2")
	for _, want := range []*regexp.Regexp{
		regexp.MustCompile(`<div class="small" data-check="tcp :8080">tcp :8080: [0-9.]+ (µs|ms|s), passed \d+ in a row</div>`),
		regexp.MustCompile(`<div class="small" data-check="https :443/healthz">https :443/healthz: [0-9.]+ (µs|ms|s), passed \d+ in a row</div>`),
		regexp.MustCompile(`<div class="small" data-answers="1">1 answer</div>`),
	} {
		if !want.MatchString(standby) {
			t.Errorf("the standby's row has no %s: %s", want, standby)
		}
	}
	if strings.Contains(dom, `data-action="failback"`) {
		t.Error("a page without the token offers a fail-back")
	}
	if dead := rowOf(web, "10.0.1.4"); !strings.Contains(dead, `data-check="tcp :8080">tcp :8080: `) || !strings.Contains(dead, "failed ") ||
		!strings.Contains(dead, `data-answers="0">0 answers<`) {
		t.Errorf("the dead backend's row: %s", dead)
	}
}

// measurePage loads the status page in two frames of the same origin, as wide as a desktop's
// window and a phone's, and writes down, for each backend's address, on how many lines it is
// drawn, and whether the page is wider than its frame.
const measurePage = `<!DOCTYPE html><html><body style="margin:0">
<iframe id="desktop" src="/" style="width:1200px;height:900px;border:0"></iframe>
<iframe id="phone" src="/" style="width:390px;height:900px;border:0"></iframe>
<div id="out">not measured</div>
<script>
let loaded = 0;
const measure = () => {
  const lines = [];
  for (const id of ["desktop", "phone"]) {
    const frame = document.getElementById(id);
    const d = frame.contentDocument;
    lines.push(id + " page " + (d.documentElement.scrollWidth > frame.clientWidth ? "wider than its frame" : "fits"));
    for (const a of d.querySelectorAll("tr[data-backend] .addr")) {
      lines.push(id + " " + a.textContent + " " + a.getClientRects().length);
    }
  }
  document.getElementById("out").textContent = lines.join("\n");
};
for (const id of ["desktop", "phone"]) document.getElementById(id).addEventListener("load", () => { if (++loaded === 2) measure(); });
</script></body></html>`

// An address is drawn on one line at desktop and phone widths (a wrap in its middle reads as
// two addresses), and the page itself stays as wide as the screen: a wide table scrolls.
func TestStatusPageAddressesWholeInBrowser(t *testing.T) {
	bin, err := exec.LookPath("chromium")
	if err != nil {
		t.Skip("no chromium on $PATH (Debian's chromium package; .ci/run installs it as root): the page is not tested in a browser")
	}
	mux := http.NewServeMux()
	mux.Handle("/", groupsView(t, ""))
	mux.HandleFunc("/measure", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Write([]byte(measurePage))
	})
	srv := httptest.NewServer(mux)
	defer srv.Close()

	dom := runChromium(t, bin, "--window-size=1700,1000", "--virtual-time-budget=3000", "--dump-dom", srv.URL+"/measure")
	out := regexp.MustCompile(`(?s)<div id="out">(.*?)</div>`).FindStringSubmatch(dom)
	if out == nil || out[1] == "not measured" {
		t.Fatalf("nothing measured: %s", dom)
	}
	t.Logf("measured:\n%s", out[1])
	measured := 0
	for _, line := range strings.Split(out[1], "\n") {
		f := strings.Fields(line)
		switch {
		case len(f) > 2 && f[1] == "page":
			if !strings.HasSuffix(line, " fits") {
				t.Errorf("%s", line)
			}
		case len(f) == 3:
			measured++
			if f[2] != "1" {
				t.Errorf("at %s width the address %s is drawn on %s lines", f[0], f[1], f[2])
			}
		}
	}
	if measured != 2*7 {
		t.Errorf("measured %d addresses, want the 7 of both pools at both widths:\n%s", measured, out[1])
	}
}

// A page opened without the token its listener wants, or with another, says so in its header,
// where "loading…" would otherwise stay; a loopback listener without a token shows its pools.
func TestStatusPageWithoutTokenInBrowser(t *testing.T) {
	bin, err := exec.LookPath("chromium")
	if err != nil {
		t.Skip("no chromium on $PATH (Debian's chromium package; .ci/run installs it as root): the page is not tested in a browser")
	}
	p := drainedPool(t)
	locked := httptest.NewServer(writeView(shown(p)))
	defer locked.Close()
	open := httptest.NewServer(&View{Pools: shown(p), Loops: func() []health.LoopStatus { return nil }})
	defer open.Close()
	header := func(url string) string {
		t.Helper()
		dom := runChromium(t, bin, "--virtual-time-budget=3000", "--dump-dom", url)
		m := regexp.MustCompile(`<div class="meta" id="meta">([^<]*)</div>`).FindStringSubmatch(dom)
		if m == nil {
			t.Fatalf("no header in %s", dom)
		}
		return m[1]
	}
	if h := header(locked.URL + "/"); h != "This page needs its token: open it as /#token=TOKEN, with the first line of the status line's token file." {
		t.Errorf("the header without a token: %q", h)
	}
	if h := header(locked.URL + "/#token=wrong"); !strings.HasPrefix(h, "The token in this page's address is not this listener's: open it as /#token=TOKEN") {
		t.Errorf("the header with another token: %q", h)
	}
	for _, url := range []string{open.URL + "/", open.URL + "/#token=any"} {
		if h := header(url); !strings.Contains(h, " · config ") {
			t.Errorf("the header of a listener without a token, at %s: %q", url, h)
		}
	}
}

// rowOf returns the HTML of the row of backend addr in a dumped page.
func rowOf(dom, addr string) string {
	return regexp.MustCompile(`<tr[^>]*data-backend="` + regexp.QuoteMeta(addr) + `"[^>]*>.*?</tr>`).FindString(dom)
}

// With the token, Fail back shows beside each family whose higher group is healthy: after a
// nopreempt failover, and to cut a preempt_delay wait short; not beside one its highest serves.
func TestStatusPageFailBackButtonInBrowser(t *testing.T) {
	bin, err := exec.LookPath("chromium")
	if err != nil {
		t.Skip("no chromium on $PATH (Debian's chromium package; .ci/run installs it as root): the page is not tested in a browser")
	}
	v := groupsView(t, apiToken)
	srv := httptest.NewServer(v)
	defer srv.Close()
	dom := runChromium(t, bin, "--virtual-time-budget=3000", "--dump-dom", srv.URL+"/#token="+apiToken)
	for _, zone := range []string{"db.lan.", "web.lan."} {
		section := regexp.MustCompile(`(?s)<section data-zone="` + regexp.QuoteMeta(zone) + `">.*?</section>`).FindString(dom)
		if !strings.Contains(section, `data-action="failback"`) {
			t.Errorf("%s offers no fail-back with its higher group healthy: %s", zone, section)
		}
	}
	if _, err := v.Pools[0].Pool.FailBack("test"); err != nil {
		t.Fatal(err)
	}
	dom = runChromium(t, bin, "--virtual-time-budget=3000", "--dump-dom", srv.URL+"/#token="+apiToken)
	section := regexp.MustCompile(`(?s)<section data-zone="db\.lan\.">.*?</section>`).FindString(dom)
	if strings.Contains(section, `data-action="failback"`) || !strings.Contains(section, `data-groups="ipv4 highest">ipv4 served by group 200 of 200/100<`) {
		t.Errorf("db.lan after its fail-back: %s", section)
	}
}
