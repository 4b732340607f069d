package deploy

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/healthdns/healthdns/test/harness"
)

// Address plan: TestMetricsExported's backends are 127.0.0.200 (live; a Corefile line of app.lan
// and push.lan, and the etcd key of etcd.lan) and 127.0.0.201 (nothing listens; a drained Corefile line of
// app.lan, the backends file of file.lan and etcd.lan's standby).
const (
	liveBackend = "127.0.0.200"
	deadBackend = "127.0.0.201"
)

// TestMain builds coredns once for the package's tests: the metrics and version tests run it.
func TestMain(m *testing.M) { os.Exit(harness.Main(m)) }

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
	// A standby group under nopreempt: the fleet's quorum runs, with its disagreement gauge.
	if _, err := etcd.Client(t).Put(ctx, "/healthdns/etcd.lan/"+deadBackend, "priority 50"); err != nil {
		t.Fatalf("putting etcd.lan's standby: %v", err)
	}
	drainUntil := time.Now().Add(24 * time.Hour).UTC().Format(time.RFC3339)
	// push.lan's node reports; one report names a backend the zone does not list, refused.
	reportToken := filepath.Join(t.TempDir(), "report.token")
	if err := os.WriteFile(reportToken, []byte("deploy-r3port-0123456789\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	statusAddr := "127.0.0.1:" + strconv.Itoa(harness.FreePort(t))

	srv := harness.Start(t, fmt.Sprintf(`.:{{PORT}} {
    bind 127.0.0.1
    prometheus {{METRICS}}
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
        nopreempt
    }
    healthdns push.lan {
        backend %s
        check push 1m token %s
        status %s
    }
}
`, liveBackend, deadBackend, drainUntil, port, backendsFile, port, etcd.Endpoint(), port, liveBackend, reportToken, statusAddr))
	report, err := http.NewRequest("POST", "http://"+statusAddr+"/api/v1/report", strings.NewReader(`{"zone":"push.lan.","backend":"`+deadBackend+`","result":"pass"}`))
	if err != nil {
		t.Fatal(err)
	}
	report.Header.Set("Authorization", "Bearer deploy-r3port-0123456789")
	if resp, err := http.DefaultClient.Do(report); err != nil || resp.StatusCode != http.StatusNotFound {
		t.Fatalf("a report of a backend push.lan does not list: %v %v, want 404", resp, err)
	} else {
		resp.Body.Close()
	}

	for range 3 {
		m := srv.Query(t, "udp", "app.lan.", dns.TypeA)
		if len(m.Answer) != 1 || !strings.Contains(m.Answer[0].String(), liveBackend) {
			t.Fatalf("app.lan: want the live backend, got %v", m.Answer)
		}
	}
	// etcd.lan answers once its list is read from etcd (before, it has no backend).
	for deadline := time.Now().Add(20 * time.Second); ; {
		m := srv.Query(t, "udp", "etcd.lan.", dns.TypeA)
		if len(m.Answer) == 1 && strings.Contains(m.Answer[0].String(), liveBackend) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("etcd.lan: no answer with the backend of its etcd key 20s after start, last %v\nlog:\n%s", m.Answer, srv.Output())
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
		families, err = harness.ScrapeText("http://" + srv.MetricsAddr + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(families, "coredns_healthdns_all_down_total{") &&
			strings.Contains(families, "coredns_healthdns_transitions_total{") &&
			strings.Contains(families, "coredns_healthdns_source_errors_total{") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no transition, all-down or source error series 20s after the backend died and the backends file broke:\n%s\nlog:\n%s", families, srv.Output())
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
	out, err := exec.Command(harness.Binary(t), "-version").CombinedOutput()
	if err != nil {
		t.Fatalf("coredns -version: %v\n%s", err, out)
	}
	if first := strings.SplitN(string(out), "\n", 2)[0]; !strings.HasPrefix(first, "CoreDNS-") || !strings.HasSuffix(first, "+healthdns-dev") {
		t.Errorf("coredns -version printed %q first, want CoreDNS-<version>+healthdns-dev", first)
	}
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}
