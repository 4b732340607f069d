// Package netlab builds a small network of hosts on one machine: each host is a network
// namespace with one veth link ("eth0") into a bridge that lives in a namespace of its own, as
// if every host were cabled to one switch. The failover lab (test/lab) and the failover
// benchmark (bench/failover) run real servers and clients on these hosts.
//
// It needs root, iproute2 and /dev/net/tun. Every namespace it creates is named after the lab's prefix, so a
// lab left behind by a killed run is found and removed by the next New with the same prefix.
// Addresses are the caller's, and live only inside the lab's namespaces.
package netlab

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/miekg/dns"
	"golang.org/x/sys/unix"
)

// Available says why this machine cannot run a lab, or nil when it can.
func Available() error {
	if os.Geteuid() != 0 {
		return errors.New("needs root to create network namespaces (run as root)")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		return fmt.Errorf("needs ip from iproute2 (apt-get install iproute2): %v", err)
	}
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		return fmt.Errorf("needs /dev/net/tun for impairable links: %v", err)
	}
	return nil
}

// Lab is a set of hosts on one bridge.
type Lab struct {
	prefix string
	bridge string // namespace holding br0

	lock *os.File // flocked while the lab exists: one lab of a prefix on the machine at a time

	mu     sync.Mutex
	procs  []*exec.Cmd
	links  []*tapLink
	routes []string // the unreachable routes of its hosts' addresses, in this namespace
	closed bool
}

// Host is one namespace with its link into the bridge.
type Host struct {
	Name string     // short name, as given to Lab.Host
	NS   string     // namespace name
	Addr netip.Addr // address on eth0
	lab  *Lab
	port string   // the link's end on the bridge, in the bridge's namespace
	link *tapLink // for an ImpairableHost
}

// New removes what an earlier lab with this prefix left behind, then creates the bridge.
//
// A lab of a prefix is the machine's one at a time: New waits until no other process holds a
// lab of that prefix (a second go test ./... of the project beside this one), since removing
// what it takes for a stale lab would tear that lab down under its tests. The lock is a file's
// flock, so a killed process's lab is stale as soon as the process is gone.
func New(prefix string) (*Lab, error) {
	if err := Available(); err != nil {
		return nil, err
	}
	lock, err := os.OpenFile(filepath.Join(os.TempDir(), "healthdns-netlab-"+prefix+".lock"), os.O_CREATE|os.O_RDWR, 0o666)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		lock.Close()
		return nil, fmt.Errorf("locking %s: %w", lock.Name(), err)
	}
	if err := RemoveStale(prefix); err != nil {
		lock.Close()
		return nil, err
	}
	l := &Lab{prefix: prefix, bridge: prefix + "-br", lock: lock}
	steps := [][]string{
		{"ip", "netns", "add", l.bridge},
		{"ip", "-n", l.bridge, "link", "set", "lo", "up"},
		{"ip", "-n", l.bridge, "link", "add", "br0", "type", "bridge"},
		{"ip", "-n", l.bridge, "link", "set", "br0", "up"},
	}
	if err := runAll(steps); err != nil {
		l.Close()
		return nil, err
	}
	return l, nil
}

// Host adds a host named prefix-name with addr/24 (an IPv6 address: /64) on its eth0, a veth
// whose other end is a port of the bridge. The port is named after the host, so names must be
// short (interface names have 15 characters).
func (l *Lab) Host(name, addr string) (*Host, error) {
	h, err := l.newHost(name, addr)
	if err != nil {
		return nil, err
	}
	steps := [][]string{
		{"ip", "netns", "add", h.NS},
		{"ip", "link", "add", h.port, "netns", l.bridge, "type", "veth", "peer", "name", "eth0", "netns", h.NS},
	}
	if err := runAll(steps); err != nil {
		return nil, fmt.Errorf("host %s: %w", name, err)
	}
	return h, h.configure()
}

func (l *Lab) newHost(name, addr string) (*Host, error) {
	a, err := netip.ParseAddr(addr)
	if err != nil {
		return nil, fmt.Errorf("host %s: %w", name, err)
	}
	h := &Host{Name: name, NS: l.prefix + "-" + name, Addr: a, lab: l, port: "p-" + name}
	if len(h.port) > 15 {
		return nil, fmt.Errorf("host %s: name too long for an interface name", name)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil, fmt.Errorf("host %s: the lab is closed", name)
	}
	return h, nil
}

// configure puts the host's eth0 and its bridge port up, with the host's address.
func (h *Host) configure() error {
	bits := "24"
	if h.Addr.Is6() {
		bits = "64"
	}
	steps := [][]string{
		{"ip", "-n", h.NS, "link", "set", "lo", "up"},
		{"ip", "-n", h.lab.bridge, "link", "set", h.port, "master", "br0", "up"},
		{"ip", "-n", h.NS, "addr", "add", h.Addr.String() + "/" + bits, "dev", "eth0"},
		{"ip", "-n", h.NS, "link", "set", "eth0", "up"},
	}
	if err := runAll(steps); err != nil {
		return fmt.Errorf("host %s: %w", h.Name, err)
	}
	// The host is reached from inside the lab's namespaces only. In the namespace the tests run
	// in, its address is unreachable while the lab runs: a test that sends to it from here by
	// mistake fails at once, here, instead of going out by the default route.
	route := netip.PrefixFrom(h.Addr, h.Addr.BitLen()).String()
	if err := run("ip", "route", "replace", "unreachable", route); err != nil {
		return fmt.Errorf("host %s: %w", h.Name, err)
	}
	h.lab.mu.Lock()
	h.lab.routes = append(h.lab.routes, route)
	h.lab.mu.Unlock()
	return nil
}

// Close stops every process the lab started, deletes its namespaces and their /etc/netns
// files. It is safe to call more than once, and from a signal handler's goroutine.
func (l *Lab) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	procs, links, routes := l.procs, l.links, l.routes
	l.mu.Unlock()
	for _, cmd := range procs {
		if cmd.Process != nil {
			cmd.Process.Kill()
		}
	}
	var errs []error
	for _, k := range links {
		errs = append(errs, k.close())
	}
	errs = append(errs, RemoveStale(l.prefix))
	for _, r := range routes {
		// Another lab of the same address (another prefix) may have replaced it: gone is gone.
		exec.Command("ip", "route", "del", "unreachable", r).Run()
	}
	l.lock.Close() // after the namespaces are gone: the next lab of the prefix may start
	return errors.Join(errs...)
}

// CloseOnSignal closes the lab when the process gets SIGINT or SIGTERM, then exits, so an
// interrupted run leaves no namespace behind. The returned func stops watching.
func (l *Lab) CloseOnSignal() (stop func()) {
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	done := make(chan struct{})
	go func() {
		select {
		case s := <-sig:
			fmt.Fprintf(os.Stderr, "netlab: %v: removing lab %s\n", s, l.prefix)
			l.Close()
			os.Exit(1)
		case <-done:
		}
	}()
	return func() {
		signal.Stop(sig)
		close(done)
	}
}

// RemoveStale kills every process inside the namespaces named prefix-* and deletes them.
func RemoveStale(prefix string) error {
	out, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		return fmt.Errorf("ip netns list: %w", err)
	}
	var errs []error
	for _, line := range strings.Split(string(out), "\n") {
		fields := strings.Fields(line)
		if len(fields) == 0 || !strings.HasPrefix(fields[0], prefix+"-") {
			continue
		}
		ns := fields[0]
		killAll(ns)
		if out, err := exec.Command("ip", "netns", "del", ns).CombinedOutput(); err != nil {
			errs = append(errs, fmt.Errorf("ip netns del %s: %v: %s", ns, err, bytes.TrimSpace(out)))
		}
	}
	dirs, _ := filepath.Glob(filepath.Join("/etc/netns", prefix+"-*"))
	for _, d := range dirs {
		if err := os.RemoveAll(d); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// killAll kills the processes in ns and waits (briefly) until they are gone, so that the
// namespace's sockets are closed before it is deleted.
func killAll(ns string) {
	for i := 0; i < 50; i++ {
		out, _ := exec.Command("ip", "netns", "pids", ns).Output()
		pids := strings.Fields(string(out))
		if len(pids) == 0 {
			return
		}
		for _, p := range pids {
			var pid int
			if _, err := fmt.Sscan(p, &pid); err == nil && pid != os.Getpid() {
				syscall.Kill(pid, syscall.SIGKILL)
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Command returns a command that runs name inside the host (ip netns exec), so it sees the
// host's network and its /etc/netns/<ns> files (resolv.conf).
func (h *Host) Command(name string, args ...string) *exec.Cmd {
	return exec.Command("ip", append([]string{"netns", "exec", h.NS, name}, args...)...)
}

// Start starts cmd and has the lab kill it on Close, should the caller not have stopped it.
func (h *Host) Start(cmd *exec.Cmd) error {
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("host %s: %s: %w", h.Name, strings.Join(cmd.Args, " "), err)
	}
	h.lab.mu.Lock()
	h.lab.procs = append(h.lab.procs, cmd)
	h.lab.mu.Unlock()
	return nil
}

// StartInside starts cmd in the host's network namespace from a thread of this process that
// has entered it, so that cmd.SysProcAttr (credentials, ambient capabilities) applies to the
// program itself; through ip netns exec it would apply to ip, which needs root to enter the
// namespace. The lab kills it on Close, should the caller not have stopped it.
func (h *Host) StartInside(cmd *exec.Cmd) error {
	// The child is forked from the calling thread, which Do keeps in the namespace.
	if err := h.Do(cmd.Start); err != nil {
		return fmt.Errorf("%s: %w", strings.Join(cmd.Args, " "), err)
	}
	h.lab.mu.Lock()
	h.lab.procs = append(h.lab.procs, cmd)
	h.lab.mu.Unlock()
	return nil
}

// Sysctl sets sysctls of the host (name=value, as sysctl -w takes them). The network ones
// (net.*) are the host's own, as a container's are: /proc/sys/net shows the namespace of the
// thread that opens it.
func (h *Host) Sysctl(settings ...string) error {
	return h.Do(func() error {
		for _, s := range settings {
			name, value, ok := strings.Cut(s, "=")
			if !ok {
				return fmt.Errorf("sysctl %q: want name=value", s)
			}
			path := filepath.Join("/proc/sys", strings.ReplaceAll(name, ".", "/"))
			if err := os.WriteFile(path, []byte(value), 0); err != nil {
				return fmt.Errorf("sysctl %s: %w", name, err)
			}
		}
		return nil
	})
}

// LinkDown unplugs the host's cable: its bridge port goes down, so nothing reaches the host
// and nothing it sends leaves; probes of it time out rather than being refused.
func (h *Host) LinkDown() error {
	return run("ip", "-n", h.lab.bridge, "link", "set", h.port, "down")
}

// LinkUp plugs the cable back in.
func (h *Host) LinkUp() error {
	return run("ip", "-n", h.lab.bridge, "link", "set", h.port, "up")
}

// SetResolvConf writes /etc/netns/<ns>/resolv.conf, which ip netns exec mounts over
// /etc/resolv.conf for the commands it runs in this host.
func (h *Host) SetResolvConf(content string) error {
	dir := filepath.Join("/etc/netns", h.NS)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "resolv.conf"), []byte(content), 0o644)
}

// Listen opens a listener inside the host. The socket belongs to the host's namespace for its
// whole life, while this process serves it from any thread.
func (h *Host) Listen(network, address string) (net.Listener, error) {
	var l net.Listener
	err := h.Do(func() (err error) {
		l, err = net.Listen(network, address)
		return err
	})
	return l, err
}

// Query asks the DNS server at server (an address; port 53) from inside the host, over UDP.
func (h *Host) Query(server, name string, qtype uint16, timeout time.Duration) (*dns.Msg, error) {
	conn, err := h.Dial("udp", net.JoinHostPort(server, "53"), timeout)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), qtype)
	c := dns.Client{Timeout: timeout}
	r, _, err := c.ExchangeWithConn(m, &dns.Conn{Conn: conn})
	return r, err
}

// Dial connects from inside the host. The address must be an IP literal: a name would be
// resolved on another thread, outside the namespace.
func (h *Host) Dial(network, address string, timeout time.Duration) (net.Conn, error) {
	var c net.Conn
	err := h.Do(func() (err error) {
		c, err = net.DialTimeout(network, address, timeout)
		return err
	})
	return c, err
}

// Do runs fn on a thread that has entered the host's namespace. Sockets fn creates stay in the
// namespace; fn must create them itself, not in goroutines it starts.
func (h *Host) Do(fn func() error) error {
	if err := InNamespace(h.NS, fn); err != nil {
		return fmt.Errorf("host %s: %w", h.Name, err)
	}
	return nil
}

// InNamespace runs fn on a thread that has entered the named network namespace, so that the
// sockets fn opens live there; it returns the thread to this process's namespace afterwards.
func InNamespace(ns string, fn func() error) error {
	return InNamespaceAt(filepath.Join("/run/netns", ns), fn)
}

// InNamespaceAt is InNamespace for the namespace file at path: /proc/PID/ns/net is a process's,
// such as a container's that no 'ip netns' names.
func InNamespaceAt(path string, fn func() error) error {
	ns := path
	target, err := os.Open(path)
	if err != nil {
		return err
	}
	defer target.Close()
	runtime.LockOSThread()
	self, err := os.Open(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()))
	if err != nil {
		runtime.UnlockOSThread()
		return err
	}
	defer self.Close()
	if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("setns %s: %w", ns, err)
	}
	ferr := fn()
	if err := unix.Setns(int(self.Fd()), unix.CLONE_NEWNET); err != nil {
		// Leave the thread locked: the runtime ends it with this goroutine instead of reusing
		// a thread that is in the wrong namespace.
		return fmt.Errorf("returning from namespace %s: %w", ns, err)
	}
	runtime.UnlockOSThread()
	return ferr
}

func run(args ...string) error {
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %v: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

func runAll(steps [][]string) error {
	for _, s := range steps {
		if err := run(s...); err != nil {
			return err
		}
	}
	return nil
}
