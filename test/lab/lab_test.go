// Package lab runs healthdns the way operators will meet it: the real coredns binary on port 53
// of a DNS host, real HTTP services on three backend hosts, and real clients (glibc's getent,
// curl) on a client host whose resolv.conf points at the DNS host. Hosts are network namespaces
// on one bridge (test/netlab), addressed in 198.18.0.0/24, the benchmarking range, which exists
// only inside them (TestLeastPrivilege's lab, prefix hdpriv, has 198.18.23.0/24 of it). Lossy and slow links are made in user space (netlab.Impairment), since this
// machine's kernel has no netem.
//
// The lab needs root and iproute2; without them every test skips and says so. .ci/run installs
// iproute2, curl and getent's libc-bin. TestFleetAgreement also runs Debian's etcd server on a
// host of its lab, which .ci/run installs for test/'s etcd tests; without it that test skips,
// except under CI, where it fails (harness.RequireEtcd).
package lab

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/healthdns/healthdns/test/harness"
	"github.com/healthdns/healthdns/test/netlab"
	"github.com/miekg/dns"
)

const (
	prefix   = "hdlab" // every namespace of the lab; a stale one from a killed run is removed first
	dns1Addr = "198.18.0.2"
	dns2Addr = "198.18.0.3"
	clAddr   = "198.18.0.100"
	webPort  = 8080
	altPort  = 8081 // the same service on a second port, for a second, differently tuned check
)

var backendAddrs = []string{"198.18.0.11", "198.18.0.12", "198.18.0.13"}

// skipReason says why the lab cannot run here, if it cannot.
var skipReason string

func TestMain(m *testing.M) {
	if err := netlab.Available(); err != nil {
		skipReason = err.Error()
		os.Exit(m.Run())
	}
	for _, tool := range []string{"getent", "curl"} {
		if _, err := exec.LookPath(tool); err != nil {
			skipReason = fmt.Sprintf("needs %s (apt-get install libc-bin curl): %v", tool, err)
			os.Exit(m.Run())
		}
	}
	os.Exit(harness.Main(m))
}

// world is one lab: two DNS hosts, three backends serving HTTP, one client.
type world struct {
	t        *testing.T
	lab      *netlab.Lab
	dns1     *netlab.Host
	dns2     *netlab.Host
	client   *netlab.Host
	backends []*netlab.Host
	services []*netlab.Service
}

// openLab makes the namespaces of prefix for one test and removes them when the test ends, also
// when it fails or panics (t.Cleanup) and when the run is interrupted (CloseOnSignal). It skips
// the test where the lab cannot run.
func openLab(t *testing.T, prefix string) *netlab.Lab {
	t.Helper()
	if skipReason != "" {
		t.Skip("skipping the namespace lab: " + skipReason)
	}
	lab, err := netlab.New(prefix)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := lab.Close(); err != nil {
			t.Errorf("removing the lab: %v", err)
		}
	})
	t.Cleanup(lab.CloseOnSignal())
	return lab
}

// newWorld builds the lab for one test and removes it when the test ends, also when it fails or
// panics (t.Cleanup) and when the run is interrupted (CloseOnSignal). The backends numbered in
// impairable (0 is b1) are cabled so that their links can be made lossy or slow.
func newWorld(t *testing.T, impairable ...int) *world {
	t.Helper()
	lab := openLab(t, prefix)
	w := &world{t: t, lab: lab}
	must := func(h *netlab.Host, err error) *netlab.Host {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return h
	}
	w.dns1 = must(lab.Host("dns1", dns1Addr))
	w.dns2 = must(lab.Host("dns2", dns2Addr))
	w.client = must(lab.Host("client", clAddr))
	for i, addr := range backendAddrs {
		add := lab.Host
		if slices.Contains(impairable, i) {
			add = lab.ImpairableHost
		}
		h := must(add(fmt.Sprintf("b%d", i+1), addr))
		svc, err := h.Serve(webPort, altPort)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(svc.Stop)
		w.backends = append(w.backends, h)
		w.services = append(w.services, svc)
	}
	if err := w.client.SetResolvConf("nameserver " + dns1Addr + "\noptions timeout:1 attempts:2\n"); err != nil {
		t.Fatal(err)
	}
	return w
}

// startDNS runs coredns on port 53 of host with the server block body given, and waits until it
// answers the client.
func (w *world) startDNS(host *netlab.Host, body string) *netlab.Process {
	w.t.Helper()
	conf := filepath.Join(w.t.TempDir(), "Corefile")
	corefile := fmt.Sprintf(".:53 {\n bind %s\n errors\n%s}\n", host.Addr, body)
	if err := os.WriteFile(conf, []byte(corefile), 0o644); err != nil {
		w.t.Fatal(err)
	}
	p, err := host.StartProcess(harness.Binary(w.t), "-conf", conf)
	if err != nil {
		w.t.Fatal(err)
	}
	w.t.Cleanup(func() { p.Stop() })
	answers := func() bool {
		_, err := w.client.Query(host.Addr.String(), "lab.probe.", dns.TypeSOA, time.Second)
		return err == nil // any answer, an error code included
	}
	if err := p.AwaitReady(10*time.Second, answers); err != nil {
		w.t.Fatal(err)
	}
	return p
}

// answer returns the A records' addresses of name from dns1, sorted as they came.
func (w *world) answer(name string) ([]string, int, error) {
	r, err := w.client.Query(dns1Addr, name, dns.TypeA, time.Second)
	if err != nil {
		return nil, 0, err
	}
	var ips []string
	for _, rr := range r.Answer {
		if a, ok := rr.(*dns.A); ok {
			ips = append(ips, a.A.String())
		}
	}
	return ips, r.Rcode, nil
}

// waitFor polls name every 10ms until cond holds, and returns when it first held.
func (w *world) waitFor(name string, within time.Duration, what string, cond func(ips []string, rcode int) bool) time.Time {
	w.t.Helper()
	deadline := time.Now().Add(within)
	var last []string
	for time.Now().Before(deadline) {
		ips, rcode, err := w.answer(name)
		if err == nil && cond(ips, rcode) {
			return time.Now()
		}
		last = ips
		time.Sleep(10 * time.Millisecond)
	}
	w.t.Fatalf("%s: not within %v; last answer %v", what, within, last)
	return time.Time{}
}

// transitions counts the transition log lines of one backend's check after its first verdict.
func transitions(out, backend, check string) (down, up int) {
	re := regexp.MustCompile(`backend ` + regexp.QuoteMeta(backend) + `(?: \([^)]*\))?: (up|down): ` + regexp.QuoteMeta(check))
	for _, m := range re.FindAllStringSubmatch(out, -1) {
		if m[1] == "down" {
			down++
		} else {
			up++
		}
	}
	return down, up
}

// pool is a healthdns block over the lab's backends with a TCP check on port.
func pool(zone string, port int, backends []string, lines ...string) string {
	return harness.Pool(zone, backends, append([]string{fmt.Sprintf("check tcp %d", port)}, lines...)...)
}

// A lab left behind by a killed run (namespaces, a process inside, /etc/netns files) is removed
// before a new one is built.
func TestStaleLabRemoved(t *testing.T) {
	if skipReason != "" {
		t.Skip("skipping the namespace lab: " + skipReason)
	}
	stale := prefix + "-stale"
	if out, err := exec.Command("ip", "netns", "add", stale).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v: %s", stale, err, out)
	}
	sleeper := exec.Command("ip", "netns", "exec", stale, "sleep", "600")
	if err := sleeper.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- sleeper.Wait() }()
	if err := os.MkdirAll(filepath.Join("/etc/netns", stale), 0o755); err != nil {
		t.Fatal(err)
	}

	newWorld(t)
	out, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(out), stale) {
		t.Errorf("stale namespace %s survived a new lab:\n%s", stale, out)
	}
	if _, err := os.Stat(filepath.Join("/etc/netns", stale)); !os.IsNotExist(err) {
		t.Errorf("/etc/netns/%s survived a new lab (stat: %v)", stale, err)
	}
	select {
	case <-exited:
	case <-time.After(5 * time.Second):
		sleeper.Process.Kill()
		t.Errorf("the process inside the stale namespace survived a new lab")
	}
}
