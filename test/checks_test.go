package test

import (
	"crypto/tls"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/healthdns/healthdns/test/harness"
	"github.com/healthdns/healthdns/test/testkit"
	"github.com/miekg/dns"
)

// webBackend is a real HTTP server on one address whose health page the test sets.
type webBackend struct {
	status atomic.Int32
	body   atomic.Value // string
	port   int
}

// startWeb serves on ip, over TLS with the certificate when one is given.
func startWeb(t *testing.T, ip string, cert ...tls.Certificate) *webBackend {
	t.Helper()
	w := &webBackend{}
	w.status.Store(http.StatusOK)
	w.body.Store("status: ok\n")
	ln, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		t.Fatal(err)
	}
	w.port = ln.Addr().(*net.TCPAddr).Port
	srv := &http.Server{ErrorLog: log.New(io.Discard, "", 0), Handler: http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/slow":
			select {
			case <-r.Context().Done():
			case <-time.After(2 * time.Second):
			}
		case "/moved":
			http.Redirect(rw, r, "/health", http.StatusFound)
		default:
			rw.WriteHeader(int(w.status.Load()))
			io.WriteString(rw, w.body.Load().(string))
		}
	})}
	if len(cert) > 0 {
		ln = tls.NewListener(ln, &tls.Config{Certificates: cert})
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return w
}

// upIn reports whether name's A answer holds ip; a zone whose every backend is down answers
// SERVFAIL here (all_down servfail), which reads as not up.
func upIn(t *testing.T, s *harness.Server, name, ip string) bool {
	t.Helper()
	r := s.Query(t, "udp", name, dns.TypeA)
	return r.Rcode == dns.RcodeSuccess && slicesContains(harness.AnswerAddrs(r), ip)
}

func slicesContains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// logLine waits for a log line that matches pattern.
func logLine(t *testing.T, s *harness.Server, pattern string) {
	t.Helper()
	re := regexp.MustCompile(pattern)
	harness.Eventually(t, 10*time.Second, func() bool { return len(harness.LinesMatching(s.Output(), re)) > 0 }, "a log line matching ", pattern)
}

// TestHTTPChecks runs HTTP and HTTPS checks of the real binary against real servers: a 503 takes
// a backend out and a 200 brings it back, a wrong body, a slow answer past the timeout and a
// redirect each say why, a certificate of another CA fails unless tls_ca names it or
// tls_insecure is set, and a backend with two checks is up only while both pass.
func TestHTTPChecks(t *testing.T) {
	t.Parallel()
	const webIP, tlsIP, otherIP, twoIP = "127.0.0.210", "127.0.0.211", "127.0.0.212", "127.0.0.213"
	ca, other := testkit.NewCA(t, "ca"), testkit.NewCA(t, "other")
	web := startWeb(t, webIP)
	secure := startWeb(t, tlsIP, ca.Server(t, []string{"app.lan"}, tlsIP))
	foreign := startWeb(t, otherIP, other.Server(t, []string{"app.lan"}, otherIP))
	twoWeb := startWeb(t, twoIP)
	tcpPort, _ := harness.StartBackends(t, twoIP)

	timing := []string{"interval 500ms", "timeout 400ms", "all_down servfail"}
	pool := func(zone, ip string, lines ...string) string {
		return harness.Pool(zone, []string{ip}, append(lines, timing...)...)
	}
	// The first probe's error is the one logged, and on a 2-core machine shared with a second
	// suite a first probe ran past 400 ms: a TLS handshake (with the system's roots read for it)
	// and once a plain GET of /health. That probe reported a timeout where the test wants the
	// certificate's or the body's failure. Every pool whose first error is asserted gets seconds,
	// and the test waits for nothing that takes that long, as those failures come at once; only
	// slow.lan, whose error is the timeout, keeps 400 ms.
	patientPool := func(zone, ip string, lines ...string) string {
		return harness.Pool(zone, []string{ip}, append(lines, "interval 5s", "timeout 4s", "all_down servfail")...)
	}
	p := strconv.Itoa
	s := harness.Start(t, ".:{{PORT}} {\n bind 127.0.0.1\n prometheus {{METRICS}}\n"+
		pool("web.lan", webIP, "check http "+p(web.port)+" /health")+
		patientPool("body.lan", webIP, "check http "+p(web.port)+` /health body "all good"`)+
		pool("slow.lan", webIP, "check http "+p(web.port)+" /slow")+
		patientPool("redirect.lan", webIP, "check http "+p(web.port)+" /moved")+
		patientPool("strict.lan", webIP, "check http "+p(web.port)+" /moved expect 200")+
		patientPool("tls.lan", tlsIP, "check https "+p(secure.port)+" / host app.lan", "tls_ca "+ca.File)+
		patientPool("tlsip.lan", tlsIP, "check https "+p(secure.port), "tls_ca "+ca.File)+
		patientPool("tlsroots.lan", tlsIP, "check https "+p(secure.port)+" / host app.lan")+
		patientPool("tlsother.lan", otherIP, "check https "+p(foreign.port)+" / host app.lan", "tls_ca "+ca.File)+
		patientPool("tlsinsecure.lan", otherIP, "check https "+p(foreign.port)+" / host app.lan", "tls_insecure")+
		pool("two.lan", twoIP, "check tcp "+p(tcpPort), "check http "+p(twoWeb.port)+" /health")+
		"}\n")

	for zone, want := range map[string]bool{"web.lan.": true, "body.lan.": false, "slow.lan.": false, "redirect.lan.": true,
		"strict.lan.": false, "tls.lan.": true, "tlsip.lan.": true, "tlsroots.lan.": false, "tlsother.lan.": false,
		"tlsinsecure.lan.": true, "two.lan.": true} {
		ip := map[string]string{"tls.lan.": tlsIP, "tlsip.lan.": tlsIP, "tlsroots.lan.": tlsIP, "tlsother.lan.": otherIP, "tlsinsecure.lan.": otherIP, "two.lan.": twoIP}[zone]
		if ip == "" {
			ip = webIP
		}
		if got := upIn(t, s, zone, ip); got != want {
			t.Errorf("%s: %s answered %v, want %v", zone, ip, got, want)
		}
	}
	reasons := map[string]string{
		"body.lan.":     fmt.Sprintf(`http :%d/health: body: no "all good" in its first 11 bytes`, web.port),
		"slow.lan.":     fmt.Sprintf(`http :%d/slow: no answer within 400ms`, web.port),
		"strict.lan.":   fmt.Sprintf(`http :%d/moved: status 302`, web.port),
		"tlsroots.lan.": fmt.Sprintf(`https :%d/: tls: x509: certificate signed by unknown authority`, secure.port),
		"tlsother.lan.": fmt.Sprintf(`https :%d/: tls: x509: certificate signed by unknown authority`, foreign.port),
	}
	for zone, reason := range reasons {
		ip := webIP
		if strings.HasPrefix(zone, "tls") {
			ip = map[string]string{"tlsroots.lan.": tlsIP, "tlsother.lan.": otherIP}[zone]
		}
		logLine(t, s, `backend `+regexp.QuoteMeta(ip)+` \([^)]*`+regexp.QuoteMeta(zone)+`[^)]*\): down \(first probe\): `+regexp.QuoteMeta(reason)+`$`)
	}

	t.Run("503 out, 200 back", func(t *testing.T) {
		web.status.Store(http.StatusServiceUnavailable)
		harness.Eventually(t, 5*time.Second, func() bool { return !upIn(t, s, "web.lan.", webIP) }, "web.lan to drop the 503 backend")
		logLine(t, s, fmt.Sprintf(`backend %s \([^)]*web\.lan\.[^)]*\): down: http :%d/health: status 503 \(2/2\)$`, regexp.QuoteMeta(webIP), web.port))
		m := s.Scrape(t)
		if v, _ := m.Value("coredns_healthdns_probe_failures_total", map[string]string{"backend": webIP, "check": fmt.Sprintf("http :%d/health", web.port), "reason": "http_status"}); v < 2 {
			t.Errorf("probe_failures_total{reason=http_status} = %v, want at least 2", v)
		}
		web.status.Store(http.StatusOK)
		harness.Eventually(t, 5*time.Second, func() bool { return upIn(t, s, "web.lan.", webIP) }, "web.lan to take the backend back")
	})

	t.Run("two checks: up while both pass", func(t *testing.T) {
		twoWeb.status.Store(http.StatusInternalServerError)
		harness.Eventually(t, 5*time.Second, func() bool { return !upIn(t, s, "two.lan.", twoIP) }, "two.lan to drop the backend its http check fails")
		logLine(t, s, fmt.Sprintf(`backend %s \(two\.lan\.\): down: http :%d/health: status 500 \(2/2\)$`, regexp.QuoteMeta(twoIP), twoWeb.port))
		twoWeb.status.Store(http.StatusOK)
		harness.Eventually(t, 5*time.Second, func() bool { return upIn(t, s, "two.lan.", twoIP) }, "two.lan to take it back")
	})
}

// TestExecChecks runs scripts as checks: exit 0 serves the backend, exit 1 does not and its
// first line is the reason, a script that hangs past the timeout is killed with its children,
// and the script sees the backend in its arguments and environment.
func TestExecChecks(t *testing.T) {
	t.Parallel()
	const good, bad, hung = "127.0.0.215", "127.0.0.216", "127.0.0.217"
	dir := t.TempDir()
	script := func(name, body string) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte("#!/bin/sh\n"+body+"\n"), 0o755); err != nil {
			t.Fatal(err)
		}
		return path
	}
	flag := filepath.Join(dir, "flag")
	pids := filepath.Join(dir, "pids")
	byBackend := script("by-backend", `[ "$1" = "$HEALTHDNS_BACKEND" ] || { echo "argument $1, environment $HEALTHDNS_BACKEND"; exit 2; }
[ "$1" = `+bad+` ] && { echo "replica lag 42s"; echo more; exit 1; }
[ -e `+flag+` ] && { echo "flagged"; exit 1; }
exit 0`)
	hang := script("hang", "sleep 60 & echo $! >> "+pids+"; wait")
	s := harness.Start(t, ".:{{PORT}} {\n bind 127.0.0.1\n"+
		harness.Pool("exec.lan", []string{good, bad}, "check exec "+byBackend+" {backend}", "interval 1s", "timeout 800ms", "answers 2")+
		harness.Pool("hang.lan", []string{hung}, "check exec "+hang, "interval 1s", "timeout 300ms", "all_down servfail")+
		"}\n")

	if got := s.Addrs(t, "udp", "exec.lan.", dns.TypeA); !harness.SameSet(got, good) {
		t.Errorf("exec.lan answered %v, want only %s", got, good)
	}
	logLine(t, s, fmt.Sprintf(`backend %s \(exec\.lan\.\): down \(first probe\): exec %s: exit 1: replica lag 42s$`, regexp.QuoteMeta(bad), regexp.QuoteMeta(byBackend)))
	logLine(t, s, fmt.Sprintf(`backend %s \(hang\.lan\.\): down \(first probe\): exec %s: did not finish within 300ms: killed$`, regexp.QuoteMeta(hung), regexp.QuoteMeta(hang)))
	if r := s.Query(t, "udp", "hang.lan.", dns.TypeA); r.Rcode != dns.RcodeServerFailure {
		t.Errorf("hang.lan: %s, want SERVFAIL: its only backend's script never finishes", dns.RcodeToString[r.Rcode])
	}

	if err := os.WriteFile(flag, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	harness.Eventually(t, 10*time.Second, func() bool { return len(s.Addrs(t, "udp", "exec.lan.", dns.TypeA)) == 2 }, "exec.lan all down: serve_all answers both")
	logLine(t, s, fmt.Sprintf(`backend %s \(exec\.lan\.\): down: exec %s: exit 1: flagged \(2/2\)$`, regexp.QuoteMeta(good), regexp.QuoteMeta(byBackend)))
	os.Remove(flag)
	harness.Eventually(t, 10*time.Second, func() bool { return harness.SameSet(s.Addrs(t, "udp", "exec.lan.", dns.TypeA), good) }, "exec.lan back to "+good)

	// Every sleep the hanging script started was killed with its process group.
	harness.Eventually(t, 5*time.Second, func() bool {
		b, _ := os.ReadFile(pids)
		for _, f := range strings.Fields(string(b)) {
			if pid, _ := strconv.Atoi(f); pid > 0 && running(pid) {
				return false
			}
		}
		return len(b) > 0
	}, "every process the hanging script started to be gone")
}

// TestExecChecksQueue starts 500 backends whose script takes 0.2 s, many more than run at once
// (exec_concurrency 64 here): the scripts beyond the limit wait for their turn, each timed from
// its own start, so every backend comes up and none is ever marked down, and the waits are
// counted. Before the queue, all but 32 of them were "down (first probe): not run: 32 checks
// already running".
func TestExecChecksQueue(t *testing.T) {
	t.Parallel()
	const count = 500
	backends := make([]string, count)
	for i := range backends {
		backends[i] = fmt.Sprintf("127.5.%d.%d", (i+1)/250, (i+1)%250+1) // 127.5.0.2 to 127.5.2.1
	}
	script := filepath.Join(t.TempDir(), "check")
	if err := os.WriteFile(script, []byte("#!/bin/sh\nsleep 0.2\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	// A long interval: one round of 500 scripts is the test's cost, 8 turns of 64 and 0.2 s
	// each when idle; the timeout leaves a loaded machine room to start a script.
	s := harness.Start(t, ".:{{PORT}} {\n bind 127.0.0.1\n prometheus {{METRICS}}\n"+
		harness.Pool("many.lan", backends, "check exec "+script, "interval 5m", "timeout 5s", "exec_concurrency 64")+
		"}\n")

	var up int
	harness.Eventually(t, 60*time.Second, func() bool {
		up = 0
		for _, sample := range s.Scrape(t).Find("coredns_healthdns_backend_up", map[string]string{"zone": "many.lan."}) {
			if sample.Value == 1 {
				up++
			}
		}
		return up == count
	}, "every backend of many.lan to be up")
	if down := harness.LinesMatching(s.Output(), regexp.MustCompile(`many\.lan\.\): down`)); len(down) > 0 {
		t.Errorf("%d backends marked down, the first: %s", len(down), down[0])
	}
	m := s.Scrape(t)
	// How many waited depends on how fast the scripts ran beside the ones still starting; that
	// some did, with 500 due at once and 64 turns, does not.
	if waits, _ := m.Value("coredns_healthdns_exec_waits_total", nil); waits <= 0 {
		t.Errorf("exec_waits_total = %v, want the scripts that waited for a turn counted", waits)
	}
	if waited, _ := m.Value("coredns_healthdns_exec_wait_seconds_total", nil); waited <= 0 {
		t.Errorf("exec_wait_seconds_total = %v, want the time they waited", waited)
	}
}

// TestHTTPBodyExact shows body's substring match passing "not ok" for ok, and body_exact
// refusing it, saying what the body was, until the body is ok.
func TestHTTPBodyExact(t *testing.T) {
	t.Parallel()
	const webIP = "127.0.5.1"
	web := startWeb(t, webIP)
	web.body.Store("not ok\n")
	p := strconv.Itoa(web.port)
	// The first probes' results are asserted, so they get time for a loaded machine (a plain GET
	// once ran past 400 ms beside a second suite): TestHTTPChecks says more.
	timing := []string{"interval 2s", "timeout 1900ms", "all_down servfail"}
	s := harness.Start(t, ".:{{PORT}} {\n bind 127.0.0.1\n"+
		harness.Pool("contains.lan", []string{webIP}, append([]string{"check http " + p + " /health body ok"}, timing...)...)+
		harness.Pool("exact.lan", []string{webIP}, append([]string{"check http " + p + " /health body_exact ok"}, timing...)...)+
		"}\n")

	if !upIn(t, s, "contains.lan.", webIP) {
		t.Errorf("contains.lan: 'body ok' should pass a body of \"not ok\" (a substring match)")
	}
	if upIn(t, s, "exact.lan.", webIP) {
		t.Errorf("exact.lan: 'body_exact ok' passed a body of \"not ok\"")
	}
	logLine(t, s, `backend `+regexp.QuoteMeta(webIP)+` \(exact\.lan\.\): down \(first probe\): `+
		regexp.QuoteMeta(fmt.Sprintf(`http :%d/health: body: "not ok", want exactly "ok"`, web.port))+`$`)

	web.body.Store("ok\n")
	harness.Eventually(t, 30*time.Second, func() bool { return upIn(t, s, "exact.lan.", webIP) }, "exact.lan up once the body is ok")
}

// running reports whether pid is a live process, not a zombie that no init has reaped.
func running(pid int) bool {
	if syscall.Kill(pid, 0) != nil {
		return false
	}
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return true
	}
	fields := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+1:]))
	return len(fields) == 0 || fields[0] != "Z"
}
