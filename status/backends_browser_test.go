//go:build unix

package status

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"

	"github.com/healthdns/healthdns/pool"
)

// etcdFake is the fake pool with its backends' keys kept as etcd keeps them: a value and the
// revision of its last change, written by compare-and-swap.
type etcdFake struct {
	*fakePool
	mu   sync.Mutex
	rev  int64
	keys map[string]pool.BackendKey
}

func (f *etcdFake) Backend(_ context.Context, addr netip.Addr) (pool.BackendKey, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	k, ok := f.keys[addr.String()]
	if !ok {
		return pool.BackendKey{}, &pool.RefusedError{Kind: pool.NotFound}
	}
	return k, nil
}

func (f *etcdFake) SetBackend(_ context.Context, addr netip.Addr, s pool.BackendSettings, revision int64, by string) (pool.BackendKey, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.keys[addr.String()].Revision != revision {
		return pool.BackendKey{}, &pool.StaleError{Current: f.keys[addr.String()]}
	}
	f.rev++
	k := pool.BackendKey{Key: "/healthdns/app.lan/" + addr.String(), Value: pool.BackendValue(s), Revision: f.rev, Exists: true}
	f.keys[addr.String()] = k
	return k, nil
}

func (f *etcdFake) RemoveBackend(_ context.Context, addr netip.Addr, revision int64, by string) (pool.BackendKey, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	k := f.keys[addr.String()]
	if k.Revision != revision {
		return pool.BackendKey{}, &pool.StaleError{Current: k}
	}
	delete(f.keys, addr.String())
	return k, nil
}

func (f *etcdFake) values() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for _, a := range []string{"10.0.0.1", "10.0.0.2", "10.0.0.7"} {
		if k, ok := f.keys[a]; ok {
			out = append(out, fmt.Sprintf("%s=%q", a, k.Value))
		}
	}
	return strings.Join(out, " ")
}

// backendsClickPage drives the status page in a frame: adds 10.0.0.7 with weight 3, edits
// 10.0.0.2 to weight 5 and priority 200, removes 10.0.0.1 (confirmed), and copies what the page
// said after each into its own DOM.
const backendsClickPage = `<!DOCTYPE html><html><body>
<iframe id="f" src="/#token=` + apiToken + `" width="1200" height="700"></iframe>
<div id="out"></div>
<script>
const f = document.getElementById("f");
f.addEventListener("load", () => {
  const w = f.contentWindow;
  const answers = ["10.0.0.7", "3", "", "5", "200"];
  w.prompt = () => answers.shift();
  w.confirm = () => true;
  const out = document.getElementById("out");
  const steps = [
    () => w.document.querySelector('section[data-zone="app.lan."] > button[data-action="addbackend"]'),
    () => w.document.querySelector('tr[data-backend="10.0.0.2"] button[data-action="edit"]'),
    () => w.document.querySelector('tr[data-backend="10.0.0.1"] button[data-action="remove"]'),
  ];
  let last = "";
  const next = () => {
    const step = steps.shift();
    if (!step) return;
    const b = step();
    if (!b) { out.textContent += "[no button] "; return; }
    b.click();
    const wait = () => {
      const shown = w.document.getElementById("written");
      if (shown.hidden || shown.textContent === last) { setTimeout(wait, 50); return; }
      last = shown.textContent;
      out.textContent += "[" + last + "] ";
      next();
    };
    wait();
  };
  const start = () => w.document.querySelector("section[data-zone]") ? next() : setTimeout(start, 50);
  start();
});
</script></body></html>`

// With the token, the page of a zone whose list is in etcd adds a backend, edits one's weight
// and priority, and removes one after a confirmation, each through the backends API with the
// revision it read; a screenshot of the page is kept for a look.
func TestStatusPageBackendsInBrowser(t *testing.T) {
	bin, err := exec.LookPath("chromium")
	if err != nil {
		t.Skip("no chromium on $PATH (Debian's chromium package; .ci/run installs it as root): the page is not tested in a browser")
	}
	fp, v := fakeView()
	f := &etcdFake{fakePool: fp, rev: 10, keys: map[string]pool.BackendKey{
		"10.0.0.1": {Key: "/healthdns/app.lan/10.0.0.1", Value: "priority 200", Revision: 4, Exists: true},
		"10.0.0.2": {Key: "/healthdns/app.lan/10.0.0.2", Value: "weight 2", Revision: 9, Exists: true},
	}}
	v.Pools[0].Pool = f
	mux := http.NewServeMux()
	mux.Handle("/", v)
	mux.HandleFunc("/click-test", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Write([]byte(backendsClickPage))
	})
	srv := httptest.NewServer(mux)
	defer srv.Close()

	dom := runChromium(t, bin, "--virtual-time-budget=8000", "--dump-dom", srv.URL+"/click-test")
	out := regexp.MustCompile(`<div id="out">([^<]*)</div>`).FindStringSubmatch(dom)
	want := `[set 10.0.0.7 in app.lan.: weight 3] [set 10.0.0.2 in app.lan.: weight 5 priority 200] [removed 10.0.0.1 in app.lan.: priority 200] `
	if out == nil || out[1] != want {
		t.Errorf("the page said %q; want %q", out, want)
	}
	if got := f.values(); got != `10.0.0.2="weight 5 priority 200" 10.0.0.7="weight 3"` {
		t.Errorf("after the clicks etcd holds %s; want 10.0.0.7 added, 10.0.0.2 edited and 10.0.0.1 removed", got)
	}

	shot := filepath.Join(os.TempDir(), "healthdns-backends-page.png")
	runChromium(t, bin, "--window-size=1200,700", "--virtual-time-budget=3000", "--screenshot="+shot, srv.URL+"/#token="+apiToken)
	t.Logf("screenshot: %s", shot)
}
