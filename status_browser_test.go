//go:build unix

package healthdns

import (
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
	v := &statusView{pools: pools, loops: func() []health.LoopStatus {
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
