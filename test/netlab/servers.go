package netlab

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
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
	return h.startProcess(name, h.Command(name, args...), env, h.Start)
}

// StartProcessAs is StartProcessEnv for a program started as attr says (another user, ambient
// capabilities), which it must apply to the program itself: the program is started inside the
// host's namespace by this process (StartInside), not through ip netns exec, so it does not see
// the host's /etc/netns files.
func (h *Host) StartProcessAs(attr *syscall.SysProcAttr, env []string, name string, args ...string) (*Process, error) {
	cmd := exec.Command(name, args...)
	cmd.SysProcAttr = attr
	return h.startProcess(name, cmd, env, h.StartInside)
}

func (h *Host) startProcess(name string, cmd *exec.Cmd, env []string, start func(*exec.Cmd) error) (*Process, error) {
	p := &Process{Host: h, Name: filepath.Base(name), cmd: cmd, out: &Buffer{}, done: make(chan struct{})}
	p.cmd.Env = env
	p.cmd.Stdout = p.out
	p.cmd.Stderr = p.out
	if err := start(p.cmd); err != nil {
		return nil, err
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// Pid is the process's id: the program's own for StartProcessAs, ip netns exec's (which the
// program replaces) otherwise.
func (p *Process) Pid() int { return p.cmd.Process.Pid }

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

// BuildCoreDNS builds the custom coredns binary from ./build of this module, and returns a link
// to it in dir.
//
// Test packages that run at the same time (go test ./... runs two at once here, and a second
// run of the suite may share the machine) build it one after the other, under a lock: two go
// builds of the same packages at once each compile everything. And the binary is kept under a
// key of everything it is built from, so that the other packages of the run, and a second run of
// the same tree beside it, link it rather than link it again: linking coredns takes a core for
// tens of seconds, and five packages that each waited for the lock to link their own pushed the
// last of them past go test's ten minutes on a loaded machine.
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

	out, err := exec.Command("go", "env", "GOMOD", "GOVERSION", "GOFLAGS").Output()
	if err != nil {
		return "", fmt.Errorf("go env: %w", err)
	}
	env := strings.Split(strings.TrimSpace(string(out)), "\n")
	gomod := env[0]
	if gomod == "" || gomod == os.DevNull {
		return "", errors.New("not inside the healthdns module")
	}
	key, err := sourceKey(filepath.Dir(gomod), strings.Join(env[1:], " ")+" CGO_ENABLED=0 -trimpath")
	if err != nil {
		return "", err
	}
	cache := filepath.Join(os.TempDir(), "healthdns-coredns")
	built := filepath.Join(cache, key, "coredns")
	if _, err := os.Stat(built); err != nil {
		pruneBuilds(cache)
		if err := os.MkdirAll(filepath.Dir(built), 0o755); err != nil {
			return "", err
		}
		// As deploy/release.sh builds it, so that the release test's build of this machine's
		// target finds every package compiled: a build with other flags shares no cache with it,
		// and compiling coredns twice took the release test past ten minutes on a busy machine.
		build := exec.Command("go", "build", "-trimpath", "-o", built+".tmp", "./build")
		build.Env = append(os.Environ(), "CGO_ENABLED=0")
		build.Dir = filepath.Dir(gomod)
		if out, err := build.CombinedOutput(); err != nil {
			return "", fmt.Errorf("go build ./build: %v\n%s", err, out)
		}
		if err := os.Rename(built+".tmp", built); err != nil {
			return "", err
		}
	}
	now := time.Now()
	os.Chtimes(filepath.Dir(built), now, now) // in use: not pruned
	bin := filepath.Join(dir, "coredns")
	if err := os.Link(built, bin); err != nil {
		// Another file system (a bench's work directory): a copy.
		if err := copyExecutable(built, bin); err != nil {
			return "", fmt.Errorf("placing the built coredns in %s: %w", dir, err)
		}
	}
	return bin, nil
}

func copyExecutable(from, to string) error {
	data, err := os.ReadFile(from)
	if err != nil {
		return err
	}
	return os.WriteFile(to, data, 0o755)
}

// sourceKey hashes what a build of ./build depends on in the module: every file but tests and
// git's, with the toolchain's version and flags.
func sourceKey(root, toolchain string) (string, error) {
	h := sha256.New()
	fmt.Fprintf(h, "%s\n", toolchain)
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		name := d.Name()
		switch {
		case d.IsDir() && (name == ".git" || name == "dist") && path != root:
			return filepath.SkipDir
		case d.IsDir() || !d.Type().IsRegular() || strings.HasSuffix(name, "_test.go"):
			return nil
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		fmt.Fprintf(h, "%s %d\n", rel, len(data))
		h.Write(data)
		return nil
	})
	if err != nil {
		return "", fmt.Errorf("hashing the module's sources: %w", err)
	}
	return hex.EncodeToString(h.Sum(nil))[:16], nil
}

// pruneBuilds removes kept binaries that no build has used for a day. Callers hold the lock.
func pruneBuilds(cache string) {
	entries, _ := os.ReadDir(cache)
	for _, e := range entries {
		if info, err := e.Info(); err == nil && time.Since(info.ModTime()) > 24*time.Hour {
			os.RemoveAll(filepath.Join(cache, e.Name()))
		}
	}
}
