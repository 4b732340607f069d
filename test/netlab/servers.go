package netlab

import (
	"bytes"
	"errors"
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
	"time"
)

// Service is an HTTP server on a host, on one or more ports, that answers every request with
// the host's name. Stop closes its listeners, so connections are refused, as when the process
// dies; Start opens them again.
type Service struct {
	Host  *Host
	Ports []int

	mu      sync.Mutex
	servers []*http.Server
}

// Serve starts a Service on the host's address.
func (h *Host) Serve(ports ...int) (*Service, error) {
	s := &Service{Host: h, Ports: ports}
	return s, s.Start()
}

// Start opens the service's ports; it is a no-op while they are open.
func (s *Service) Start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.servers != nil {
		return nil
	}
	handler := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, s.Host.Name)
	})
	for _, port := range s.Ports {
		addr := net.JoinHostPort(s.Host.Addr.String(), strconv.Itoa(port))
		l, err := s.Host.Listen("tcp", addr)
		if err != nil {
			s.stopLocked()
			return fmt.Errorf("service on %s: %w", addr, err)
		}
		srv := &http.Server{Handler: handler, ReadHeaderTimeout: 5 * time.Second}
		srv.SetKeepAlivesEnabled(false)
		s.servers = append(s.servers, srv)
		go srv.Serve(l)
	}
	return nil
}

// Stop closes the ports and every open connection.
func (s *Service) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stopLocked()
}

func (s *Service) stopLocked() {
	for _, srv := range s.servers {
		srv.Close()
	}
	s.servers = nil
}

// Process is a long-running program on a host, with its output kept for the test to read.
type Process struct {
	Host *Host
	Name string
	cmd  *exec.Cmd
	out  *Buffer
	done chan struct{}
	err  error
}

// StartProcess runs name on the host until Stop or the lab's Close.
func (h *Host) StartProcess(name string, args ...string) (*Process, error) {
	return h.StartProcessEnv(nil, name, args...)
}

// StartProcessEnv is StartProcess with the environment env; nil is this process's.
func (h *Host) StartProcessEnv(env []string, name string, args ...string) (*Process, error) {
	p := &Process{Host: h, Name: filepath.Base(name), cmd: h.Command(name, args...), out: &Buffer{}, done: make(chan struct{})}
	p.cmd.Env = env
	p.cmd.Stdout = p.out
	p.cmd.Stderr = p.out
	if err := h.Start(p.cmd); err != nil {
		return nil, err
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// Output is what the process has printed so far.
func (p *Process) Output() string { return p.out.String() }

// Exited is closed when the process has ended.
func (p *Process) Exited() <-chan struct{} { return p.done }

// AwaitReady polls ready every 20ms until it holds. It fails, with the process's output, when
// the process exits first or within passes.
func (p *Process) AwaitReady(within time.Duration, ready func() bool) error {
	deadline := time.Now().Add(within)
	for !ready() {
		select {
		case <-p.done:
			return fmt.Errorf("%s on %s exited:\n%s", p.Name, p.Host.Name, p.Output())
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s on %s not ready after %v:\n%s", p.Name, p.Host.Name, within, p.Output())
		}
		time.Sleep(20 * time.Millisecond)
	}
	return nil
}

// Stop sends SIGTERM, then SIGKILL if the process is still there after a grace period.
func (p *Process) Stop() error {
	select {
	case <-p.done:
		return nil
	default:
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
		p.cmd.Process.Kill()
		<-p.done
	}
	return nil
}

// Buffer collects a process's output while another goroutine reads it.
type Buffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// BuildCoreDNS builds the custom coredns binary from ./build of this module into dir.
//
// Test packages that run at the same time (go test ./... runs two at once here) build it one
// after the other: two go builds of the same packages at once each compile everything, while the
// second of two in a row finds the first's work in the build cache. On a cold cache that is
// minutes.
func BuildCoreDNS(dir string) (string, error) {
	lock, err := os.OpenFile(filepath.Join(os.TempDir(), "healthdns-build.lock"), os.O_CREATE|os.O_RDWR, 0o666)
	if err != nil {
		return "", err
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return "", fmt.Errorf("locking %s: %w", lock.Name(), err)
	}
	defer syscall.Flock(int(lock.Fd()), syscall.LOCK_UN)

	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", errors.New("not inside the healthdns module")
	}
	bin := filepath.Join(dir, "coredns")
	build := exec.Command("go", "build", "-o", bin, "./build")
	build.Dir = filepath.Dir(gomod)
	if out, err := build.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./build: %v\n%s", err, out)
	}
	return bin, nil
}
