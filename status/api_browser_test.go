//go:build unix

package status

import (
	"net/http"
	"net/http/httptest"
	"os/exec"
	"regexp"
	"strings"
	"testing"

	"github.com/healthdns/healthdns/pool"
)

// With the token in its fragment, the page offers a write per backend in a real browser
// (headless Chromium; the test skips without it): Drain for one in service, Undrain for one the
// API drained, none for one its configuration drains; a page without a token offers none.
func TestStatusPageWritesInBrowser(t *testing.T) {
	bin, err := exec.LookPath("chromium")
	if err != nil {
		t.Skip("no chromium on $PATH (Debian's chromium package; .ci/run installs it as root): the page is not tested in a browser")
	}
	p := drainedPool(t)
	if err := p.Drain(p.Status().Backends[1].Addr, pool.Drain{Reason: "kernel upgrade"}, "192.0.2.99:1"); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(writeView(shown(p)))
	defer srv.Close()

	// The virtual time budget lets the page's first poll (it has no inlined data without the
	// token in the request) come back before the DOM is dumped.
	dump := func(url string) string {
		t.Helper()
		return runChromium(t, bin, "--virtual-time-budget=3000", "--dump-dom", url)
	}
	row := func(dom, addr string) string {
		return regexp.MustCompile(`<tr[^>]*data-backend="` + regexp.QuoteMeta(addr) + `"[^>]*>.*?</tr>`).FindString(dom)
	}

	dom := dump(srv.URL + "/#token=" + apiToken)
	if r := row(dom, "10.0.0.1"); !strings.Contains(r, `data-action="drain"`) {
		t.Errorf("the row of a backend in service has no Drain button: %s", r)
	}
	if r := row(dom, "10.0.0.2"); !strings.Contains(r, `data-action="undrain"`) || !strings.Contains(r, "by 192.0.2.99:1 via the status API: kernel upgrade") {
		t.Errorf("the row of a backend the API drained: %s", r)
	}
	if r := row(dom, "10.0.0.3"); strings.Contains(r, "data-action") || !strings.Contains(r, "drained by its configuration") {
		t.Errorf("the row of a backend its configuration drains: %s", r)
	}

	// A listener without a token shows the rows to anyone, and offers no write, which it refuses.
	open := httptest.NewServer(&View{Pools: shown(p)})
	defer open.Close()
	dom = dump(open.URL + "/")
	if r := row(dom, "10.0.0.1"); r == "" || strings.Contains(dom, `data-action="`) {
		t.Errorf("without a token the page offers writes, or shows no row: %s", r)
	}
}

// clickPage loads the status page in a frame of the same origin, answers its prompts, clicks
// the Drain button of 10.0.0.1, and copies what the page says of the write into its own DOM,
// which a DOM dump shows.
const clickPage = `<!DOCTYPE html><html><body>
<iframe id="f" src="/#token=` + apiToken + `"></iframe>
<div id="out">not clicked</div>
<script>
const f = document.getElementById("f");
f.addEventListener("load", () => {
  const w = f.contentWindow;
  const answers = ["kernel upgrade", ""];
  w.prompt = () => answers.shift();
  const click = () => {
    const b = w.document.querySelector('tr[data-backend="10.0.0.1"] button[data-action="drain"]');
    if (!b) { setTimeout(click, 50); return; }
    b.click();
    const report = () => {
      const shown = w.document.getElementById("written");
      if (shown.hidden) { setTimeout(report, 50); return; }
      document.getElementById("out").textContent = "written: " + shown.textContent;
    };
    report();
  };
  click();
});
</script></body></html>`

// A click on Drain, in a real browser, asks for a reason and an end, and drains the backend
// through the API with the token from the fragment; the page says it was done.
func TestStatusPageDrainClickInBrowser(t *testing.T) {
	bin, err := exec.LookPath("chromium")
	if err != nil {
		t.Skip("no chromium on $PATH (Debian's chromium package; .ci/run installs it as root): the page is not tested in a browser")
	}
	p := drainedPool(t)
	mux := http.NewServeMux()
	mux.Handle("/", writeView(shown(p)))
	mux.HandleFunc("/click-test", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Write([]byte(clickPage))
	})
	srv := httptest.NewServer(mux)
	defer srv.Close()

	dom := runChromium(t, bin, "--virtual-time-budget=5000", "--dump-dom", srv.URL+"/click-test")
	out := regexp.MustCompile(`<div id="out">([^<]*)</div>`).FindStringSubmatch(dom)
	if out == nil || out[1] != "written: drain: done for 10.0.0.1 in app.lan." {
		t.Errorf("the page after the click: %q", out)
	}
	b := statusBackendOf(t, p, "10.0.0.1")
	if b.State != "drained" || b.DrainedBy != "api" || b.DrainReason != "kernel upgrade" || b.DrainUntil != nil || !strings.HasPrefix(b.DrainCaller, "127.0.0.1:") {
		t.Errorf("after the click the backend is %+v; want drained by the API for kernel upgrade, without end, from 127.0.0.1", b)
	}
}
