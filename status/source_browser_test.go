//go:build unix

package status

import (
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/healthdns/healthdns/health"
	"github.com/healthdns/healthdns/pool"
)

// A backends file that broke after its first load shows on the page: the source, its last good
// load, and the error with the file's line. The screenshot is left outside the repository
// (HEALTHDNS_SCREENSHOTS, or the test's temporary directory) for a person to look at.
func TestStatusPageSourceInBrowser(t *testing.T) {
	bin, err := exec.LookPath("chromium")
	if err != nil {
		t.Skip("no chromium on $PATH (Debian's chromium package; .ci/run installs it as root): the page is not tested in a browser")
	}
	list := filepath.Join(t.TempDir(), "app.lan.backends")
	if err := os.WriteFile(list, []byte("10.0.0.2\n10.0.0.3 weight 2\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := testConfig("app.lan.", "10.0.0.1")
	cfg.Source = pool.Source{Kind: pool.SourceFile, Path: list}
	if err := cfg.Source.ReadFile(cfg.Backends); err != nil {
		t.Fatal(err)
	}
	pools := statusPools(t, map[string]bool{"10.0.0.3": true}, cfg)
	if err := os.WriteFile(list, []byte("10.0.0.2\n10.0.0.3 weight heavy\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for docOf(pools[0]).Sources[1].LastError == "" {
		if time.Now().After(deadline) {
			t.Fatal("the broken file was not seen in 10s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	v := &View{Pools: shown(pools...), Loops: func() []health.LoopStatus { return nil }}
	srv := httptest.NewServer(v)
	defer srv.Close()

	dom := runChromium(t, bin, "--dump-dom", srv.URL+"/")
	chip := regexp.MustCompile(`<span[^>]*data-source="file"[^>]*>([^<]*)</span>`).FindStringSubmatch(dom)
	if chip == nil || !strings.Contains(chip[1], "file "+list+": 2 backends, last good load") || !strings.Contains(chip[0], "bad") {
		t.Errorf("the source's chip: %q", chip)
	}
	failure := regexp.MustCompile(`<div[^>]*data-source-error="file"[^>]*>([^<]*)</div>`).FindStringSubmatch(dom)
	if failure == nil || !strings.Contains(failure[1], list+":2: invalid weight 'heavy'") {
		t.Errorf("the source's error: %q", failure)
	}

	dir := os.Getenv("HEALTHDNS_SCREENSHOTS")
	if dir == "" {
		dir = t.TempDir()
	}
	shot := filepath.Join(dir, "status-source.png")
	runChromium(t, bin, "--window-size=1100,700", "--screenshot="+shot, srv.URL+"/")
	if fi, err := os.Stat(shot); err != nil || fi.Size() == 0 {
		t.Errorf("no screenshot at %s: %v", shot, err)
	}
	t.Logf("screenshot: %s", shot)
}
