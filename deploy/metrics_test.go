package deploy

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/healthdns/healthdns/test/harness"
	"github.com/healthdns/healthdns/test/netlab"
)

// Address plan: TestMetricsExported's backends are 127.0.0.200 (live; a Corefile line of app.lan
// and the etcd key of etcd.lan) and 127.0.0.201 (nothing listens; a drained Corefile line of
// app.lan and the backends file of file.lan).
const (
	liveBackend = "127.0.0.200"
	deadBackend = "127.0.0.201"
)

// corednsBinary builds ./build once for the package's tests (the build is cached by go, but
// linking still takes seconds).
var corednsBinary = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "healthdns-deploy-")
	if err != nil {
		return "", err
	}
	return netlab.BuildCoreDNS(dir)
})

func builtCoreDNS(t *testing.T) string {
	t.Helper()
	bin, err := corednsBinary()
	if err != nil {
		t.Fatal(err)
	}
	return bin
}

// TestMetricsExported runs the real binary, makes it export every healthdns series (answers,
// a transition, an all-down event, a drain, a backends file that fails to load, a list read
// from a real etcd), and checks that every metric and label the alert rules and the dashboard
// use is among them, and that the dashboard shows every healthdns metric.
func TestMetricsExported(t *testing.T) {
	harness.RequireEtcd(t)
	used := usedRefs(t)
	if len(used) < 10 {
		t.Fatalf("found only %d metric references in the rules and the dashboard: is the extraction broken?", len(used))
	}

	backend, err := net.Listen("tcp", net.JoinHostPort(liveBackend, "0"))
	if err != nil {
		t.Fatal(err)
	}
	defer backend.Close()
	go func() {
		for {
			c, err := backend.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	port := backend.Addr().(*net.TCPAddr).Port
	backendsFile := filepath.Join(t.TempDir(), "file.lan")
	writeFile(t, backendsFile, deadBackend+" weight 2\n")
	etcd := harness.StartEtcd(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := etcd.Client(t).Put(ctx, "/healthdns/etcd.lan/"+liveBackend, "weight 2"); err != nil {
		t.Fatalf("putting etcd.lan's backend: %v", err)
	}
	drainUntil := time.Now().Add(24 * time.Hour).UTC().Format(time.RFC3339)

	srv := startCoreDNS(t, builtCoreDNS(t), fmt.Sprintf(`. {
    bind 127.0.0.1
    prometheus 127.0.0.1:{metrics}
    healthdns app.lan {
        backend %s priority 200
        backend %s drain until %s deploy test
        check tcp %d
        interval 100ms
        timeout 50ms
        rise 1
        fall 1
    }
    healthdns file.lan {
        backends_file %s
        check tcp %d
        interval 100ms
        timeout 50ms
    }
    healthdns etcd.lan {
        backends_etcd {
            endpoint %s
        }
        check tcp %d
        interval 100ms
        timeout 50ms
    }
}
`, liveBackend, deadBackend, drainUntil, port, backendsFile, port, etcd.Endpoint(), port))

	for range 3 {
		m := srv.query(t, "app.lan.")
		if len(m.Answer) != 1 || !strings.Contains(m.Answer[0].String(), liveBackend) {
			t.Fatalf("app.lan: want the live backend, got %v", m.Answer)
		}
	}
	// etcd.lan answers once its list is read from etcd (before, it has no backend).
	for deadline := time.Now().Add(20 * time.Second); ; {
		m := srv.query(t, "etcd.lan.")
		if len(m.Answer) == 1 && strings.Contains(m.Answer[0].String(), liveBackend) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("etcd.lan: no answer with the backend of its etcd key 20s after start, last %v\nlog:\n%s", m.Answer, srv.out)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// The live backend dies: a transition to down, the zone's only family all down, and its
	// serving group switches from the live one's (200) to none. The backends file breaks: a
	// source error (its counter has no series until then).
	backend.Close()
	writeFile(t, backendsFile, deadBackend+" weight two\n")
	var families string
	deadline := time.Now().Add(20 * time.Second)
	for {
		families = srv.scrape(t)
		if strings.Contains(families, "coredns_healthdns_all_down_total{") &&
			strings.Contains(families, "coredns_healthdns_transitions_total{") &&
			strings.Contains(families, "coredns_healthdns_source_errors_total{") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no transition, all-down or source error series 20s after the backend died and the backends file broke:\n%s\nlog:\n%s", families, srv.out)
		}
		time.Sleep(50 * time.Millisecond)
	}
	exported := parseExposition(t, families)

	for _, p := range unexported(used, exported) {
		t.Error(p)
	}
	var dashboardMetrics []string
	for _, r := range used {
		if strings.HasPrefix(r.where, "panel ") {
			dashboardMetrics = append(dashboardMetrics, r.metric)
		}
	}
	for name, f := range exported {
		if !strings.HasPrefix(name, "coredns_healthdns_") {
			continue
		}
		shown := slices.Contains(dashboardMetrics, name) || slices.Contains(dashboardMetrics, name+"_bucket")
		if !shown {
			t.Errorf("the dashboard shows no panel of %s (%s)", name, f.GetHelp())
		}
	}
}

// TestVersionDev checks that a plain build says it is a healthdns build. The stamped version
// is TestRelease's.
func TestVersionDev(t *testing.T) {
	out, err := exec.Command(builtCoreDNS(t), "-version").CombinedOutput()
	if err != nil {
		t.Fatalf("coredns -version: %v\n%s", err, out)
	}
	if first := strings.SplitN(string(out), "\n", 2)[0]; !strings.HasPrefix(first, "CoreDNS-") || !strings.HasSuffix(first, "+healthdns-dev") {
		t.Errorf("coredns -version printed %q first, want CoreDNS-<version>+healthdns-dev", first)
	}
}

type coreDNS struct {
	addr, metrics string
	out           *syncBuffer
}

// startCoreDNS runs bin on corefile, in which {metrics} is replaced by a free port, and waits
// until it answers. A free port can be taken before coredns binds it: then it tries again.
func startCoreDNS(t *testing.T, bin, corefile string) *coreDNS {
	t.Helper()
	for attempt := 1; ; attempt++ {
		s, err := tryCoreDNS(t, bin, corefile)
		if err == nil {
			return s
		}
		if attempt == 3 || !strings.Contains(err.Error(), "address already in use") {
			t.Fatal(err)
		}
	}
}

func tryCoreDNS(t *testing.T, bin, corefile string) (*coreDNS, error) {
	s := &coreDNS{
		addr:    net.JoinHostPort("127.0.0.1", strconv.Itoa(freePort(t))),
		metrics: net.JoinHostPort("127.0.0.1", strconv.Itoa(freePort(t))),
		out:     &syncBuffer{},
	}
	path := filepath.Join(t.TempDir(), "Corefile")
	writeFile(t, path, strings.ReplaceAll(corefile, "{metrics}", strings.TrimPrefix(s.metrics, "127.0.0.1:")))
	cmd := exec.Command(bin, "-conf", path, "-dns.port", strings.TrimPrefix(s.addr, "127.0.0.1:"))
	cmd.Stdout, cmd.Stderr = s.out, s.out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	stop := func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		c := &dns.Client{Timeout: 250 * time.Millisecond}
		m := new(dns.Msg)
		m.SetQuestion("app.lan.", dns.TypeSOA)
		if _, _, err := c.Exchange(m, s.addr); err == nil {
			t.Cleanup(stop)
			return s, nil
		}
		select {
		case <-exited:
			return nil, fmt.Errorf("coredns exited:\n%s", s.out)
		default:
		}
		if time.Now().After(deadline) {
			stop()
			return nil, fmt.Errorf("coredns did not answer within 30s:\n%s", s.out)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (s *coreDNS) query(t *testing.T, name string) *dns.Msg {
	t.Helper()
	c := &dns.Client{Timeout: 2 * time.Second}
	m := new(dns.Msg)
	m.SetQuestion(name, dns.TypeA)
	r, _, err := c.Exchange(m, s.addr)
	if err != nil {
		t.Fatalf("query %s: %v", name, err)
	}
	return r
}

func (s *coreDNS) scrape(t *testing.T) string {
	t.Helper()
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get("http://" + s.metrics + "/metrics")
	if err != nil {
		t.Fatalf("scraping: %v", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("scraping: %s %v", resp.Status, err)
	}
	return string(b)
}

// freePort is a port free for both UDP and TCP on 127.0.0.1 when it was asked.
// freePort is harness.FreePort: a port no other test process of this run is given either.
func freePort(t *testing.T) int { return harness.FreePort(t) }

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}
