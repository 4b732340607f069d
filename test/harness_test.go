// Package test runs the real coredns binary built from ../build against real TCP backends on
// 127.0.0.0/8, and queries it over UDP and TCP with miekg/dns.
package test

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"
)

var corednsBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "healthdns-test")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	corednsBin = filepath.Join(dir, "coredns")
	build := exec.Command("go", "build", "-o", corednsBin, "./build")
	build.Dir = ".." // the module root
	build.Stdout, build.Stderr = os.Stdout, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building coredns from ./build:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// syncBuffer collects a process's output while tests read it.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// server is a running coredns.
type server struct {
	t        *testing.T
	cmd      *exec.Cmd
	addr     string // DNS, 127.0.0.1:port
	httpAddr string // prometheus, 127.0.0.1:port
	conf     string
	out      *syncBuffer
	exited   chan struct{}
}

// freePort returns a port free for both UDP and TCP on 127.0.0.1.
func freePort(t *testing.T) int {
	t.Helper()
	for range 50 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := ln.Addr().(*net.TCPAddr).Port
		pc, err := net.ListenPacket("udp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		ln.Close()
		if err == nil {
			pc.Close()
			return port
		}
	}
	t.Fatal("no free port")
	return 0
}

// corefile fills a template: {{DNS}} is the DNS port, {{HTTP}} a free port for prometheus or
// ready.
type corefile string

// startServer writes the Corefile, starts coredns on it and waits until it answers.
func startServer(t *testing.T, conf corefile) *server {
	t.Helper()
	s := newServer(t, conf)
	if err := s.start(); err != nil {
		t.Fatal(err)
	}
	s.waitAnswering()
	return s
}

func newServer(t *testing.T, conf corefile) *server {
	dnsPort, httpPort := freePort(t), freePort(t)
	s := &server{
		t:        t,
		addr:     fmt.Sprintf("127.0.0.1:%d", dnsPort),
		httpAddr: fmt.Sprintf("127.0.0.1:%d", httpPort),
		conf:     filepath.Join(t.TempDir(), "Corefile"),
		out:      &syncBuffer{},
		exited:   make(chan struct{}),
	}
	s.write(conf)
	return s
}

func (s *server) write(conf corefile) {
	s.t.Helper()
	_, dnsPort, _ := net.SplitHostPort(s.addr)
	_, httpPort, _ := net.SplitHostPort(s.httpAddr)
	text := strings.NewReplacer("{{DNS}}", dnsPort, "{{HTTP}}", httpPort).Replace(string(conf))
	if err := os.WriteFile(s.conf, []byte(text), 0o644); err != nil {
		s.t.Fatal(err)
	}
}

func (s *server) start() error {
	s.cmd = exec.Command(corednsBin, "-conf", s.conf)
	s.cmd.Stdout, s.cmd.Stderr = s.out, s.out
	if err := s.cmd.Start(); err != nil {
		return err
	}
	go func() { s.cmd.Wait(); close(s.exited) }()
	s.t.Cleanup(func() {
		s.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-s.exited:
		case <-time.After(10 * time.Second):
			s.cmd.Process.Kill()
			<-s.exited
		}
		if s.t.Failed() {
			s.t.Logf("coredns output:\n%s", s.out)
		}
	})
	return nil
}

// waitAnswering polls until the server answers a query, or fails the test.
func (s *server) waitAnswering() {
	s.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	c := &dns.Client{Net: "udp", Timeout: 200 * time.Millisecond}
	m := new(dns.Msg)
	m.SetQuestion("healthdns-probe.invalid.", dns.TypeA)
	for time.Now().Before(deadline) {
		select {
		case <-s.exited:
			s.t.Fatalf("coredns exited before answering:\n%s", s.out)
		default:
		}
		if _, _, err := c.Exchange(m, s.addr); err == nil {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	s.t.Fatalf("coredns did not answer within 20s:\n%s", s.out)
}

// reload rewrites the Corefile and sends SIGUSR1, then waits for the reload to be logged.
func (s *server) reload(conf corefile) {
	s.t.Helper()
	before := strings.Count(s.out.String(), "Reloading complete")
	s.write(conf)
	if err := s.cmd.Process.Signal(syscall.SIGUSR1); err != nil {
		s.t.Fatal(err)
	}
	eventually(s.t, 20*time.Second, "reload to complete", func() bool {
		return strings.Count(s.out.String(), "Reloading complete") > before
	})
}

// exchange sends one query over net ("udp" or "tcp") and returns the reply.
func (s *server) exchange(net string, m *dns.Msg) *dns.Msg {
	s.t.Helper()
	c := &dns.Client{Net: net, Timeout: 2 * time.Second}
	r, _, err := c.Exchange(m, s.addr)
	if err != nil {
		s.t.Fatalf("%s query %v: %v", net, m.Question, err)
	}
	return r
}

func (s *server) query(net, name string, qtype uint16) *dns.Msg {
	s.t.Helper()
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	return s.exchange(net, m)
}

// addrs returns the A and AAAA addresses of a reply's answer.
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
	return out
}

func (s *server) addrs(name string) []string {
	s.t.Helper()
	return addrs(s.query("udp", name, dns.TypeA))
}

// metric returns the value of the first sample whose line starts with prefix (name and labels),
// and whether there was one.
func (s *server) metric(prefix string) (float64, bool) {
	s.t.Helper()
	resp, err := http.Get("http://" + s.httpAddr + "/metrics")
	if err != nil {
		s.t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, prefix) {
			f := strings.Fields(line)
			v, err := strconv.ParseFloat(f[len(f)-1], 64)
			return v, err == nil
		}
	}
	return 0, false
}

func eventually(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// backend is a real TCP service on 127.0.0.x:port that accepts and closes connections.
type backend struct {
	t    *testing.T
	addr string
	mu   sync.Mutex
	ln   net.Listener
}

func newBackend(t *testing.T, ip string, port int) *backend {
	b := &backend{t: t, addr: net.JoinHostPort(ip, strconv.Itoa(port))}
	b.start()
	t.Cleanup(b.stop)
	return b
}

func (b *backend) start() {
	b.t.Helper()
	var ln net.Listener
	var err error
	for range 50 { // the port may linger briefly after a stop
		if ln, err = net.Listen("tcp", b.addr); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		b.t.Fatal(err)
	}
	b.mu.Lock()
	b.ln = ln
	b.mu.Unlock()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
}

func (b *backend) stop() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.ln != nil {
		b.ln.Close()
		b.ln = nil
	}
}

// backendPort returns a TCP port free on every given 127.0.0.x address.
func backendPort(t *testing.T, ips ...string) int {
	t.Helper()
	for range 50 {
		port := freePort(t)
		ok := true
		for _, ip := range ips {
			ln, err := net.Listen("tcp", net.JoinHostPort(ip, strconv.Itoa(port)))
			if err != nil {
				ok = false
				break
			}
			ln.Close()
		}
		if ok {
			return port
		}
	}
	t.Fatal("no port free on every backend address")
	return 0
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
