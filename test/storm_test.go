package test

import (
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/healthdns/healthdns/test/harness"
)

// procStat reads what the kernel says of a process: its open file descriptors and its RSS.
func procStat(t *testing.T, pid int) (fds int, rssKiB int) {
	t.Helper()
	entries, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatal(err)
	}
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(status), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			rssKiB, _ = strconv.Atoi(strings.Fields(v)[0])
		}
	}
	return len(entries), rssKiB
}

// TestReloadStorm (issue 23): 100 Corefile reloads under a steady query load, each adding or
// removing pools, backends, checks, a backends file and a status listener, one in five failing
// (a line that does not parse, or a status listener on a port the test holds): no query is
// lost (a TCP connection the old instance accepted and closed unanswered is asked again, as a
// stub resolver does: CoreDNS's reload does that, not healthdns; README "Bugs"), an API drain of a backend that stays is kept throughout, nothing a failed reload
// started is left, and goroutines and file descriptors come back to what they were (RSS is
// logged: the Go heap does not give memory back on demand).
func TestReloadStorm(t *testing.T) {
	t.Parallel()
	const stay, drained = "127.0.8.1", "127.0.8.2"
	churn := []string{"127.0.8.3", "127.0.8.4", "127.0.8.5", "127.0.8.6"}
	port, _ := harness.StartBackends(t, append([]string{stay, drained}, churn...)...)
	dir := t.TempDir()
	token := "storm-token-0123456789abcdef"
	tokenFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokenFile, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	list := filepath.Join(dir, "list")
	if err := os.WriteFile(list, []byte(churn[0]+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	statusPort := harness.FreePort(t)
	extraStatus := harness.FreePort(t)
	held, err := net.Listen("tcp", "127.0.0.1:0") // a status address no reload can bind
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	busy := held.Addr().String()

	// The base every configuration has: app.lan's two backends, its status listener, metrics.
	base := func(extra ...string) string {
		return ".:{{PORT}} {\n bind 127.0.0.1\n prometheus {{METRICS}}\n" +
			harness.TCPPool("app.lan", port, "100ms", "50ms", []string{stay, drained},
				fmt.Sprintf("status 127.0.0.1:%d token %s", statusPort, tokenFile)) +
			strings.Join(extra, "") + "}\n"
	}
	s := harness.Start(t, base())
	api := &apiClient{base: fmt.Sprintf("http://127.0.0.1:%d", statusPort), token: token, http: &http.Client{Timeout: 5 * time.Second}}
	if code, body, _ := api.post(t, "/api/v1/drain", token, `{"zone":"app.lan","backend":"`+drained+`","reason":"storm"}`); code != 200 {
		t.Fatalf("drain: %d %s", code, body)
	}
	settle := func() (goroutines float64, fds, rss int) {
		time.Sleep(2 * time.Second) // a reload's old instance lets go of what it held once the new one serves
		g, _ := s.Scrape(t).Value("go_goroutines", nil)
		fds, rss = procStat(t, s.Pid())
		return g, fds, rss
	}
	g0, fds0, rss0 := settle()

	// The load: A queries for app.lan over UDP and TCP, each must get stay's address.
	var sent, lost, closedByReload atomic.Int64
	var lastLoss atomic.Value
	var lossMu sync.Mutex
	losses := map[string]int{}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for _, proto := range []string{"udp", "udp", "tcp"} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				sent.Add(1)
				r, err := s.Try(proto, "app.lan.", dns.TypeA, 2*time.Second)
				if proto == "tcp" && (errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET)) {
					// The old instance closed a connection it had accepted and not read yet
					// (miekg/dns's Shutdown, under CoreDNS's reload): a stub resolver asks again,
					// and so does this client, once.
					closedByReload.Add(1)
					r, err = s.Try(proto, "app.lan.", dns.TypeA, 2*time.Second)
				}
				if err != nil || r.Rcode != dns.RcodeSuccess || !harness.SameSet(harness.AnswerAddrs(r), stay) {
					lost.Add(1)
					lastLoss.Store(fmt.Sprintf("%s: %v %v", proto, err, r))
					lossMu.Lock()
					losses[fmt.Sprintf("%s %v", proto, err)]++
					lossMu.Unlock()
				}
				time.Sleep(2 * time.Millisecond)
			}
		}()
	}

	rng := rand.New(rand.NewPCG(23, 1))
	failed := 0
	for i := range 100 {
		var extra []string
		if rng.IntN(2) == 0 { // a pool of churning backends, with one to three of them
			n := 1 + rng.IntN(3)
			extra = append(extra, harness.TCPPool("churn.lan", port, "100ms", "50ms", churn[1:1+n]))
		}
		if rng.IntN(2) == 0 { // a pool from the backends file, with an HTTP check beside TCP
			extra = append(extra, harness.TCPPool("file.lan", port, "100ms", "50ms", nil, "backends_file "+list))
			if err := os.WriteFile(list, []byte(churn[rng.IntN(len(churn))]+"\n"), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		if rng.IntN(3) == 0 { // a second status listener
			extra = append(extra, harness.Pool("extra.lan", []string{churn[0]}, fmt.Sprintf("check tcp %d", port),
				fmt.Sprintf("status 127.0.0.1:%d", extraStatus)))
		}
		var bad string
		if i%5 == 4 {
			if rng.IntN(2) == 0 {
				bad = harness.Pool("bad.lan", []string{"127.0.8.300"})
			} else {
				bad = harness.Pool("bad.lan", []string{churn[0]}, fmt.Sprintf("check tcp %d", port), "status "+busy)
			}
		}
		err := s.Reload(t, base(append(extra, bad)...))
		switch {
		case bad != "" && err == nil:
			t.Fatalf("reload %d with %q succeeded", i, bad)
		case bad == "" && err != nil:
			t.Fatalf("reload %d: %v", i, err)
		case err != nil:
			failed++
		}
	}
	close(stop)
	wg.Wait()
	if n := lost.Load(); n != 0 {
		t.Errorf("%d of %d queries lost or wrong during 100 reloads: %v; the last: %v", n, sent.Load(), losses, lastLoss.Load())
	}
	if state, by := api.drainedBy(t, "app.lan.", drained); state != "drained" || by != "api" {
		t.Errorf("after the storm %s is %s (drained by %q), want drained by the API", drained, state, by)
	}

	// Back to the base configuration: what the storm started is gone with it.
	if err := s.Reload(t, base()); err != nil {
		t.Fatal(err)
	}
	if c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(extraStatus), time.Second); err == nil {
		c.Close()
		t.Errorf("the storm's second status listener still listens")
	}
	var g1 float64
	var fds1, rss1 int
	harness.Eventually(t, 30*time.Second, func() bool {
		g1, fds1, rss1 = settle()
		return g1 <= g0+5 && fds1 <= fds0+5
	}, fmt.Sprintf("goroutines and fds back to where they were (before: %.0f goroutines, %d fds)", g0, fds0))
	t.Logf("%d queries through 100 reloads (%d of them failed as meant), 0 lost (%d TCP connections closed unanswered by the old instance, asked again); goroutines %.0f → %.0f, fds %d → %d, RSS %d → %d KiB",
		sent.Load(), failed, closedByReload.Load(), g0, g1, fds0, fds1, rss0, rss1)
	m := s.Scrape(t)
	for _, gone := range []string{"churn.lan.", "file.lan.", "extra.lan.", "bad.lan."} {
		if samples := m.Find("coredns_healthdns_backend_up", map[string]string{"zone": gone}); len(samples) > 0 {
			t.Errorf("zone %s still has backend_up series after the base reload: %v", gone, samples)
		}
	}
}
