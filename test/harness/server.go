package harness

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// Server is a running coredns. Its Corefile is a template: {{PORT}} is replaced by the DNS port,
// {{METRICS}} and {{READY}} by host:port addresses on 127.0.0.1 for the prometheus and ready
// plugins.
type Server struct {
	Addr        string // DNS, 127.0.0.1:port
	MetricsAddr string
	ReadyAddr   string
	Started     time.Time // when the process was started

	t        testing.TB
	confPath string
	cmd      *exec.Cmd
	out      *logPipe
	exited   chan struct{}
}

// Start starts coredns on the Corefile template and waits until it answers a query. The test's
// cleanup stops it.
func Start(t testing.TB, tmpl string) *Server {
	t.Helper()
	return Launch(t, tmpl, func(s *Server) bool {
		_, err := s.Try("udp", "healthdns-probe.invalid.", dns.TypeA, 250*time.Millisecond)
		return err == nil
	})
}

// Launch starts coredns and polls up until it reports true. A port picked free can be taken by
// someone else before coredns binds it: then coredns exits with "address already in use" and
// Launch tries again on fresh ports.
func Launch(t testing.TB, tmpl string, up func(*Server) bool) *Server {
	t.Helper()
	return launch(t, tmpl, nil, nil, up)
}

// LaunchWatched is Launch that calls spawned with each process it starts, the moment it starts
// and before it listens, for a test of what the server does from its very first instant (its
// Addr is known then). spawned must return at once; after a port clash it is called again with
// the next process.
func LaunchWatched(t testing.TB, tmpl string, spawned func(*Server), up func(*Server) bool) *Server {
	t.Helper()
	return launch(t, tmpl, nil, spawned, up)
}

// LaunchEnv is Launch with env added to coredns's environment (NAME=VALUE each).
func LaunchEnv(t testing.TB, tmpl string, env []string, up func(*Server) bool) *Server {
	t.Helper()
	return launch(t, tmpl, env, nil, up)
}

func launch(t testing.TB, tmpl string, env []string, spawned func(*Server), up func(*Server) bool) *Server {
	t.Helper()
	bin := Binary(t)
	dir := t.TempDir()
	for attempt := 0; ; attempt++ {
		s := &Server{
			t:           t,
			Addr:        net.JoinHostPort("127.0.0.1", strconv.Itoa(FreePort(t))),
			MetricsAddr: net.JoinHostPort("127.0.0.1", strconv.Itoa(FreePort(t))),
			ReadyAddr:   net.JoinHostPort("127.0.0.1", strconv.Itoa(FreePort(t))),
			confPath:    filepath.Join(dir, "Corefile"),

			exited: make(chan struct{}),
		}
		s.writeConf(t, tmpl)
		s.cmd = exec.Command(bin, "-conf", s.confPath)
		// Every goroutine's stack when stop has to abort a hung coredns (see stop).
		s.cmd.Env = append(append(os.Environ(), "GOTRACEBACK=all"), env...)
		out, err := newLogPipe()
		if err != nil {
			t.Fatalf("a pipe for coredns's output: %v", err)
		}
		s.out = out
		s.cmd.Stdout, s.cmd.Stderr = out.w, out.w
		s.Started = time.Now()
		err = s.cmd.Start()
		out.started()
		if err != nil {
			t.Fatalf("starting coredns: %v", err)
		}
		go func() { s.cmd.Wait(); close(s.exited) }()
		if spawned != nil {
			spawned(s)
		}

		deadline := time.Now().Add(30 * time.Second)
		for {
			if !s.Alive() {
				break
			}
			// Only once this process says its servers run: the port was free when picked, and
			// another test process's server may take it before coredns binds, and answer.
			if s.listening() && up(s) {
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
			t.Logf("port clash, retrying: %s", LastLine(s.out.String()))
			continue
		}
		t.Fatalf("coredns exited before answering (%v); output:\n%s", s.cmd.ProcessState, s.out)
	}
}

// listening reports whether coredns printed its banner, which it does once every server of the
// Corefile listens (and so after healthdns's startup wait).
func (s *Server) listening() bool { return strings.Contains(s.out.String(), "\nCoreDNS-") }

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
			// SIGABRT makes the Go runtime write every goroutine's stack to the output before it
			// exits: what a hung coredns was waiting for is the first thing to read. Not SIGQUIT:
			// caddy traps that one, in the very goroutine that handles SIGTERM and runs reloads,
			// so a hung reload leaves both unanswered.
			s.t.Errorf("coredns did not exit within 10s of SIGTERM; sending SIGABRT for its goroutines' stacks")
			s.cmd.Process.Signal(syscall.SIGABRT)
			select {
			case <-s.exited:
			case <-time.After(5 * time.Second):
				s.cmd.Process.Kill()
				<-s.exited
			}
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
	Eventually(t, 15*time.Second, func() bool {
		ack = reloadAck.FindStringIndex(s.Output()[mark:])
		return ack != nil || !s.Alive()
	}, "coredns to acknowledge SIGUSR1 ('[INFO] SIGUSR1: Reloading'): was the signal lost?")
	if !s.Alive() {
		t.Fatalf("coredns exited on SIGUSR1 (%v)", s.cmd.ProcessState)
	}
	from := mark + ack[1]
	var result string
	Eventually(t, 60*time.Second, func() bool {
		result = reloadDone.FindString(s.Output()[from:])
		return result != ""
	}, "the acknowledged reload to complete or fail")
	if strings.HasPrefix(result, "[ERROR]") {
		return fmt.Errorf("%s", result)
	}
	return nil
}

// Try sends one query and returns the reply or the error.
func (s *Server) Try(proto, name string, qtype uint16, timeout time.Duration) (*dns.Msg, error) {
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	c := &dns.Client{Net: proto, Timeout: timeout}
	r, _, err := c.Exchange(m, s.Addr)
	if err == nil && !r.Response {
		// Before coredns binds its port, the kernel may give the client's socket that very
		// port as its own: a UDP socket connected to itself reads back its own query, ID and
		// all, which miekg/dns takes for the reply (an empty NOERROR).
		return nil, fmt.Errorf("%s %s: read back our own query: nothing listens on %s", proto, name, s.Addr)
	}
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
	return AnswerAddrs(s.Query(t, proto, name, qtype))
}

// Scrape reads /metrics from the prometheus plugin at {{METRICS}}.
func (s *Server) Scrape(t testing.TB) *Metrics {
	t.Helper()
	m, err := ScrapeURL("http://" + s.MetricsAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// Pid is the coredns process's id, for what only /proc tells (its file descriptors, its RSS).
func (s *Server) Pid() int { return s.cmd.Process.Pid }

// Restart ends the process with sig (SIGKILL for a crash) and starts coredns again on the same
// ports, as a service manager would, and waits until the new process answers a query. tmpl
// replaces the Corefile unless empty; meanwhile, unless nil, runs while no process runs. From
// then on Output is the new process's; the old one's is returned.
func (s *Server) Restart(t testing.TB, sig syscall.Signal, tmpl string, meanwhile func()) string {
	t.Helper()
	if err := s.cmd.Process.Signal(sig); err != nil {
		t.Fatalf("signal %v: %v", sig, err)
	}
	select {
	case <-s.exited:
	case <-time.After(10 * time.Second):
		t.Fatalf("coredns did not exit within 10s of %v", sig)
	}
	old := s.out.String()
	if tmpl != "" {
		s.writeConf(t, tmpl)
	}
	if meanwhile != nil {
		meanwhile()
	}
	out, err := newLogPipe()
	if err != nil {
		t.Fatalf("a pipe for coredns's output: %v", err)
	}
	s.cmd = exec.Command(Binary(t), "-conf", s.confPath)
	s.cmd.Env = append(os.Environ(), "GOTRACEBACK=all")
	s.out, s.exited = out, make(chan struct{})
	s.cmd.Stdout, s.cmd.Stderr = out.w, out.w
	s.Started = time.Now()
	err = s.cmd.Start()
	out.started()
	if err != nil {
		t.Fatalf("restarting coredns: %v", err)
	}
	exited := s.exited
	cmd := s.cmd
	go func() { cmd.Wait(); close(exited) }()
	Eventually(t, 30*time.Second, func() bool {
		if !s.Alive() {
			t.Fatalf("coredns exited at its restart (%v); output:\n%s", cmd.ProcessState, out)
		}
		_, err := s.Try("udp", "healthdns-probe.invalid.", dns.TypeA, 250*time.Millisecond)
		return s.listening() && err == nil
	}, "coredns to answer after its restart")
	return old
}
