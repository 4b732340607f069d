// Package test runs the real coredns binary built from ../build against real TCP backends on
// 127.0.0.0/8 and ::1, and queries it over UDP and TCP with miekg/dns. Nothing here talks to
// any address outside the loopback range.
//
// Address plan: every test owns its own backend addresses, so that no two parallel tests ever
// share a (backend, port) pair, and ports come from one allocator that never hands out a port
// twice in a run.
//
//	TestDNS          127.0.0.11-.13, .21-.60, ::1
//	TestFailover     127.0.0.101, .102
//	TestFirstAnswer  127.0.0.103 (live), .104 (closed)
//	TestAllDown      127.0.0.105, .106, ::1
//	TestPolicies     127.0.0.107-.109
//	TestReady        127.0.0.110
//	TestReload       127.0.0.111-.113
//	TestReloadBad    127.0.0.114
//	TestReloadFailsAfterStartup 127.0.0.122, .123
//	TestReloadFailedLeavesNothing 127.0.0.160-.162
//	TestStartupProbesTogether 127.0.0.170-.177 (silent)
//	TestMetrics      127.0.0.115-.117, ::1 (closed)
//	TestNoNextPlugin 127.0.0.118
//	TestGoodCorefileDefaults 127.0.0.119, .121 (live), .120 (closed)
//	TestBesideZoneFile 127.0.0.140, .141
//	TestSerialIsTheConfiguration 127.0.0.142
//	TestAllDownDualStack 127.0.0.143, ::1 (closed)
//	TestMetricsPerServer 127.0.0.180, .181
//	TestCacheInFront 127.0.0.124-.126
package test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/healthdns/healthdns/test/netlab"
	"github.com/miekg/dns"
)

// corednsBin is the binary TestMain built from ./build.
var corednsBin string

func TestMain(m *testing.M) { os.Exit(runMain(m)) }

func runMain(m *testing.M) int {
	dir, err := os.MkdirTemp("", "healthdns-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "FATAL:", err)
		return 2
	}
	defer os.RemoveAll(dir)
	if corednsBin, err = netlab.BuildCoreDNS(dir); err != nil {
		fmt.Fprintln(os.Stderr, "FATAL:", err)
		return 2
	}
	return m.Run()
}

// ---- ports ----

var (
	portsMu sync.Mutex
	ports   = map[int]bool{}
)

// freePort returns a port that is free for both UDP and TCP on 127.0.0.1 and on every extra
// address given, and that no other caller in this run has been given.
func freePort(t testing.TB, extra ...string) int {
	t.Helper()
	for range 100 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := ln.Addr().(*net.TCPAddr).Port
		ok := true
		var held []io.Closer
		if pc, err := net.ListenPacket("udp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port))); err == nil {
			held = append(held, pc)
		} else {
			ok = false
		}
		for _, ip := range extra {
			if !ok {
				break
			}
			l, err := net.Listen("tcp", net.JoinHostPort(ip, strconv.Itoa(port)))
			if err != nil {
				ok = false
				break
			}
			held = append(held, l)
		}
		ln.Close()
		for _, c := range held {
			c.Close()
		}
		if !ok {
			continue
		}
		portsMu.Lock()
		taken := ports[port]
		ports[port] = true
		portsMu.Unlock()
		if !taken {
			return port
		}
	}
	t.Fatal("no free port")
	return 0
}

// ---- coredns ----

// Server is a running coredns. Its Corefile is a template: {{PORT}} is replaced by the DNS port,
// {{METRICS}} and {{READY}} by host:port addresses on 127.0.0.1 for the prometheus and ready
// plugins.
type Server struct {
	t           *testing.T
	Addr        string // DNS, 127.0.0.1:port
	MetricsAddr string
	ReadyAddr   string
	confPath    string
	cmd         *exec.Cmd
	out         *netlab.Buffer
	exited      chan struct{}
	started     time.Time // when the process was started
}

// startServer starts coredns on the Corefile template and waits until it answers a query.
func startServer(t *testing.T, tmpl string) *Server {
	t.Helper()
	return launch(t, tmpl, func(s *Server) bool {
		_, err := s.try("udp", "healthdns-probe.invalid.", dns.TypeA, 250*time.Millisecond)
		return err == nil
	})
}

// launch starts coredns and polls up until it reports true. A port picked free can be taken by
// someone else before coredns binds it: then coredns exits with "address already in use" and
// launch tries again on fresh ports.
func launch(t *testing.T, tmpl string, up func(*Server) bool) *Server {
	t.Helper()
	dir := t.TempDir()
	for attempt := 0; ; attempt++ {
		s := &Server{
			t:           t,
			Addr:        net.JoinHostPort("127.0.0.1", strconv.Itoa(freePort(t))),
			MetricsAddr: net.JoinHostPort("127.0.0.1", strconv.Itoa(freePort(t))),
			ReadyAddr:   net.JoinHostPort("127.0.0.1", strconv.Itoa(freePort(t))),
			confPath:    filepath.Join(dir, "Corefile"),
			out:         &netlab.Buffer{},
			exited:      make(chan struct{}),
		}
		s.writeConf(t, tmpl)
		s.cmd = exec.Command(corednsBin, "-conf", s.confPath)
		s.cmd.Stdout, s.cmd.Stderr = s.out, s.out
		s.started = time.Now()
		if err := s.cmd.Start(); err != nil {
			t.Fatalf("starting coredns: %v", err)
		}
		go func() { s.cmd.Wait(); close(s.exited) }()

		deadline := time.Now().Add(30 * time.Second)
		for {
			if !s.Alive() {
				break
			}
			if up(s) {
				t.Cleanup(s.stop)
				return s
			}
			if time.Now().After(deadline) {
				s.stop()
				t.Fatalf("coredns did not answer within 30s; output:\n%s", s.out)
			}
			time.Sleep(10 * time.Millisecond)
		}
		if strings.Contains(s.out.String(), "address already in use") && attempt < 5 {
			t.Logf("port clash, retrying: %s", lastLine(s.out.String()))
			continue
		}
		t.Fatalf("coredns exited before answering (%v); output:\n%s", s.cmd.ProcessState, s.out)
	}
}

func (s *Server) writeConf(t testing.TB, tmpl string) {
	t.Helper()
	_, port, _ := net.SplitHostPort(s.Addr)
	text := strings.NewReplacer("{{PORT}}", port, "{{METRICS}}", s.MetricsAddr, "{{READY}}", s.ReadyAddr).Replace(tmpl)
	if err := os.WriteFile(s.confPath, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
}

// stop sends SIGTERM and waits for the process to exit; output is logged if the test failed.
func (s *Server) stop() {
	if s.Alive() {
		s.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-s.exited:
		case <-time.After(10 * time.Second):
			s.t.Errorf("coredns did not exit within 10s of SIGTERM; killing it")
			s.cmd.Process.Kill()
			<-s.exited
		}
	}
	if s.t.Failed() {
		s.t.Logf("coredns -conf %s output:\n%s", s.confPath, s.out)
	}
}

// Alive reports whether the process is still running.
func (s *Server) Alive() bool {
	select {
	case <-s.exited:
		return false
	default:
		return true
	}
}

// Output is everything the process printed so far.
func (s *Server) Output() string { return s.out.String() }

var (
	reloadAck  = regexp.MustCompile(`(?m)\[INFO\] SIGUSR1: Reloading$`)
	reloadDone = regexp.MustCompile(`(?m)\[INFO\] Reloading complete|\[ERROR\] SIGUSR1: .*`)
)

// Reload rewrites the Corefile from tmpl (same ports) and sends SIGUSR1, then waits for caddy to
// acknowledge the signal and for the end of the restart it acknowledged. It returns the error
// line when the reload failed. The two waits fail apart, so that a lost signal is not mistaken
// for a slow reload; their deadlines are generous, for a loaded machine, and say nothing of
// speed.
func (s *Server) Reload(t testing.TB, tmpl string) error {
	t.Helper()
	mark := len(s.Output())
	s.writeConf(t, tmpl)
	if err := s.cmd.Process.Signal(syscall.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	var ack []int
	eventually(t, 15*time.Second, func() bool {
		ack = reloadAck.FindStringIndex(s.Output()[mark:])
		return ack != nil || !s.Alive()
	}, "coredns to acknowledge SIGUSR1 ('[INFO] SIGUSR1: Reloading'): was the signal lost?")
	if !s.Alive() {
		t.Fatalf("coredns exited on SIGUSR1 (%v)", s.cmd.ProcessState)
	}
	from := mark + ack[1]
	var result string
	eventually(t, 60*time.Second, func() bool {
		result = reloadDone.FindString(s.Output()[from:])
		return result != ""
	}, "the acknowledged reload to complete or fail")
	if strings.HasPrefix(result, "[ERROR]") {
		return fmt.Errorf("%s", result)
	}
	return nil
}

// ---- DNS client ----

// try sends one query and returns the reply or the error.
func (s *Server) try(proto, name string, qtype uint16, timeout time.Duration) (*dns.Msg, error) {
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	c := &dns.Client{Net: proto, Timeout: timeout}
	r, _, err := c.Exchange(m, s.Addr)
	return r, err
}

// Exchange sends m over proto ("udp" or "tcp") and fails the test if no reply comes.
func (s *Server) Exchange(t testing.TB, proto string, m *dns.Msg) *dns.Msg {
	t.Helper()
	c := &dns.Client{Net: proto, Timeout: 2 * time.Second}
	r, _, err := c.Exchange(m, s.Addr)
	if err != nil {
		t.Fatalf("%s %v: %v", proto, m.Question, err)
	}
	return r
}

// Query asks for name/qtype over proto.
func (s *Server) Query(t testing.TB, proto, name string, qtype uint16) *dns.Msg {
	t.Helper()
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	return s.Exchange(t, proto, m)
}

// Addrs returns the sorted A/AAAA addresses of the answer to name/qtype over proto.
func (s *Server) Addrs(t testing.TB, proto, name string, qtype uint16) []string {
	t.Helper()
	return addrs(s.Query(t, proto, name, qtype))
}

// addrs returns the sorted A and AAAA addresses in a reply's answer section.
func addrs(r *dns.Msg) []string {
	var out []string
	for _, rr := range r.Answer {
		switch rr := rr.(type) {
		case *dns.A:
			out = append(out, rr.A.String())
		case *dns.AAAA:
			out = append(out, rr.AAAA.String())
		}
	}
	sort.Strings(out)
	return out
}

func distinct(list []string) int {
	seen := map[string]bool{}
	for _, x := range list {
		seen[x] = true
	}
	return len(seen)
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// sameSet reports whether got holds exactly the addresses of want, each once.
func sameSet(got []string, want ...string) bool {
	if len(got) != len(want) {
		return false
	}
	w := append([]string(nil), want...)
	sort.Strings(w)
	for i := range got {
		if got[i] != w[i] {
			return false
		}
	}
	return true
}

// ---- backends ----

// Backend is a real TCP service on IP:Port that accepts connections and closes them at once.
// Stop closes the listener (connects are then refused); Start listens again on the same address.
type Backend struct {
	t    testing.TB
	IP   string
	Port int
	mu   sync.Mutex
	ln   net.Listener
	wg   sync.WaitGroup
}

func startBackend(t testing.TB, ip string, port int) *Backend {
	t.Helper()
	b := &Backend{t: t, IP: ip, Port: port}
	b.Start()
	t.Cleanup(b.Stop)
	return b
}

func (b *Backend) Addr() string { return net.JoinHostPort(b.IP, strconv.Itoa(b.Port)) }

func (b *Backend) Start() {
	b.t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.ln != nil {
		return
	}
	var ln net.Listener
	var err error
	deadline := time.Now().Add(5 * time.Second)
	for { // a just-closed listener's port can take a moment to be bindable again
		if ln, err = net.Listen("tcp", b.Addr()); err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		b.t.Fatalf("backend %s: %v", b.Addr(), err)
	}
	b.ln = ln
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
}

func (b *Backend) Stop() {
	b.mu.Lock()
	ln := b.ln
	b.ln = nil
	b.mu.Unlock()
	if ln != nil {
		ln.Close()
		b.wg.Wait()
	}
}

// startBackends starts a backend on every ip, all on one fresh port, and returns the port.
func startBackends(t testing.TB, ips ...string) (int, map[string]*Backend) {
	t.Helper()
	port := freePort(t, ips...)
	bs := map[string]*Backend{}
	for _, ip := range ips {
		bs[ip] = startBackend(t, ip, port)
	}
	return port, bs
}

// ---- metrics ----

// Sample is one line of the Prometheus text format.
type Sample struct {
	Name   string
	Labels map[string]string
	Value  float64
}

// Metrics is one scrape: the samples and the declared # TYPE of each family.
type Metrics struct {
	Samples []Sample
	Types   map[string]string
}

// Scrape reads /metrics from the prometheus plugin at {{METRICS}}.
func (s *Server) Scrape(t testing.TB) *Metrics {
	t.Helper()
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get("http://" + s.MetricsAddr + "/metrics")
	if err != nil {
		t.Fatalf("scraping metrics: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("scraping metrics: %s", resp.Status)
	}
	m, err := parseMetrics(resp.Body)
	if err != nil {
		t.Fatalf("parsing metrics: %v", err)
	}
	return m
}

// parseMetrics is a small parser of the Prometheus text exposition format, enough for what
// client_golang writes: comments, name{label="value",...} value [timestamp].
func parseMetrics(r io.Reader) (*Metrics, error) {
	m := &Metrics{Types: map[string]string{}}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<22)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		if strings.HasPrefix(line, "#") {
			if f := strings.Fields(line); len(f) >= 4 && f[1] == "TYPE" {
				m.Types[f[2]] = f[3]
			}
			continue
		}
		smp := Sample{Labels: map[string]string{}}
		i := strings.IndexAny(line, "{ ")
		if i < 0 {
			return nil, fmt.Errorf("bad line %q", line)
		}
		smp.Name = line[:i]
		rest := line[i:]
		if rest[0] == '{' {
			rest = rest[1:]
			for {
				rest = strings.TrimLeft(rest, ", ")
				if strings.HasPrefix(rest, "}") {
					rest = rest[1:]
					break
				}
				eq := strings.Index(rest, "=\"")
				if eq < 0 {
					return nil, fmt.Errorf("bad labels in %q", line)
				}
				key := rest[:eq]
				rest = rest[eq+2:]
				var val strings.Builder
				j := 0
				for ; j < len(rest) && rest[j] != '"'; j++ {
					if rest[j] == '\\' && j+1 < len(rest) {
						j++
						switch rest[j] {
						case 'n':
							val.WriteByte('\n')
						default:
							val.WriteByte(rest[j])
						}
						continue
					}
					val.WriteByte(rest[j])
				}
				if j >= len(rest) {
					return nil, fmt.Errorf("unterminated label in %q", line)
				}
				smp.Labels[key] = val.String()
				rest = rest[j+1:]
			}
		}
		f := strings.Fields(rest)
		if len(f) == 0 {
			return nil, fmt.Errorf("no value in %q", line)
		}
		v, err := strconv.ParseFloat(f[0], 64)
		if err != nil {
			return nil, fmt.Errorf("bad value in %q: %w", line, err)
		}
		smp.Value = v
		m.Samples = append(m.Samples, smp)
	}
	return m, sc.Err()
}

// labelsMatch reports whether have holds every label of want. Zone labels are compared without
// the trailing dot: the contract does not say whether zones are exported fully qualified.
func labelsMatch(have, want map[string]string) bool {
	for k, v := range want {
		h, ok := have[k]
		if !ok {
			return false
		}
		if k == "zone" {
			h, v = strings.TrimSuffix(h, "."), strings.TrimSuffix(v, ".")
		}
		if h != v {
			return false
		}
	}
	return true
}

// Find returns the samples of name whose labels include want.
func (m *Metrics) Find(name string, want map[string]string) []Sample {
	var out []Sample
	for _, s := range m.Samples {
		if s.Name == name && labelsMatch(s.Labels, want) {
			out = append(out, s)
		}
	}
	return out
}

// Value returns the sum of the samples of name whose labels include want, and whether any exist.
func (m *Metrics) Value(name string, want map[string]string) (float64, bool) {
	found := m.Find(name, want)
	var sum float64
	for _, s := range found {
		sum += s.Value
	}
	return sum, len(found) > 0
}

// ---- waiting ----

// eventually polls cond every 25ms until it is true, or fails the test after timeout.
func eventually(t testing.TB, timeout time.Duration, cond func() bool, what ...any) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, fmt.Sprint(what...))
		}
		time.Sleep(25 * time.Millisecond)
	}
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		return s[i+1:]
	}
	return s
}

// linesMatching returns the lines of out that match every pattern.
func linesMatching(out string, patterns ...*regexp.Regexp) []string {
	var lines []string
	for _, line := range strings.Split(out, "\n") {
		ok := true
		for _, p := range patterns {
			if !p.MatchString(line) {
				ok = false
				break
			}
		}
		if ok {
			lines = append(lines, line)
		}
	}
	return lines
}

// ipWord matches ip as a whole address: 127.0.0.10 does not match in 127.0.0.101, ::1 does not
// match in fe80::1:2.
func ipWord(ip string) *regexp.Regexp {
	if strings.Contains(ip, ":") {
		return regexp.MustCompile(`(^|[^0-9a-fA-F:])` + regexp.QuoteMeta(ip) + `($|[^0-9a-fA-F:])`)
	}
	return regexp.MustCompile(`(^|[^0-9.])` + regexp.QuoteMeta(ip) + `($|[^0-9.]|\.([^0-9]|$))`)
}

// tcpPool is a healthdns block with a TCP check; extra lines are added as they are.
func tcpPool(zone string, port int, interval, timeout string, backends []string, extra ...string) string {
	var b strings.Builder
	fmt.Fprintf(&b, " healthdns %s {\n", zone)
	for _, ip := range backends {
		fmt.Fprintf(&b, "  backend %s\n", ip)
	}
	fmt.Fprintf(&b, "  check tcp %d\n  interval %s\n  timeout %s\n", port, interval, timeout)
	for _, e := range extra {
		fmt.Fprintf(&b, "  %s\n", e)
	}
	b.WriteString(" }\n")
	return b.String()
}
