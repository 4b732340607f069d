package lab

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/healthdns/healthdns/test/netlab"
	"github.com/miekg/dns"
)

var (
	waitTrials   = flag.Int("wait.trials", 3, "TestClientWait: lookups per client, setup and failure")
	waitSlow     = flag.Bool("wait.slow", false, "TestClientWait: also measure glibc's defaults (timeout:5), up to 20 s a trial")
	waitResolved = flag.String("wait.resolved", "/lib/systemd/systemd-resolved", "TestClientWait: the systemd-resolved binary to run on a client")
)

// resolverSetup is one way a client host finds the two healthdns servers: a resolv.conf for
// glibc, or systemd-resolved's stub with both servers in DNS=.
type resolverSetup struct {
	name       string // as in the table: the resolv.conf options, or "systemd-resolved"
	host, addr string
	resolvConf string
	resolved   bool // run systemd-resolved on the host; resolvConf points at its stub
	slow       bool // only with -wait.slow
}

var resolverSetups = []resolverSetup{
	{name: "defaults (timeout:5 attempts:2)", host: "cdef", addr: "198.18.0.110", slow: true,
		resolvConf: "nameserver " + dns1Addr + "\nnameserver " + dns2Addr + "\n"},
	{name: "timeout:1 attempts:2", host: "ct1", addr: "198.18.0.111",
		resolvConf: "nameserver " + dns1Addr + "\nnameserver " + dns2Addr + "\noptions timeout:1 attempts:2\n"},
	{name: "timeout:1 attempts:2 rotate", host: "crot", addr: "198.18.0.112",
		resolvConf: "nameserver " + dns1Addr + "\nnameserver " + dns2Addr + "\noptions timeout:1 attempts:2 rotate\n"},
	{name: "timeout:1 attempts:2 single-request", host: "csr", addr: "198.18.0.113",
		resolvConf: "nameserver " + dns1Addr + "\nnameserver " + dns2Addr + "\noptions timeout:1 attempts:2 single-request\n"},
	// As the stub-resolv.conf that resolved writes itself.
	{name: "systemd-resolved (DNS=dns1 dns2)", host: "cres", addr: "198.18.0.114", resolved: true,
		resolvConf: "nameserver 127.0.0.53\noptions edns0 trust-ad\n"},
}

// lookupTool is a real client program that resolves a name through glibc.
type lookupTool struct {
	name string
	key  string // part of the names it looks up, so that no two lookups share a cache entry
	args func(name string) []string
	// got says whether the output shows a successful lookup
	got func(out string) bool
}

func answeredBackend(out string) bool {
	return slices.ContainsFunc(backendAddrs, func(a string) bool { return strings.Contains(out, a+" ") })
}

var lookupTools = []lookupTool{
	// AAAA, then A: two lookups, each starting again at the first server (getent.c asks
	// gethostbyname2 for AF_INET6 first, and the pools have IPv4 backends only).
	{"getent hosts", "h", func(n string) []string { return []string{"getent", "hosts", n} }, answeredBackend},
	// getaddrinfo with AF_UNSPEC: A and AAAA in one exchange with each server.
	{"getent ahosts", "a", func(n string) []string { return []string{"getent", "ahosts", n} }, answeredBackend},
	{"curl", "c", func(n string) []string {
		return []string{"curl", "-sS", "--max-time", "40", fmt.Sprintf("http://%s:%d/", n, webPort)}
	}, func(out string) bool { return slices.Contains([]string{"b1", "b2", "b3"}, strings.TrimSpace(out)) }},
}

// serverFailure is what happens to one of the two healthdns servers while the clients look up.
type serverFailure struct {
	name        string
	cause, undo func() error
}

// What a client waits for a name while one of its two healthdns servers is frozen (its coredns
// stopped with SIGSTOP: the host is up, queries are taken and never answered), unplugged (no
// reply, no ICMP) or killed (its port closed: the host answers ICMP port unreachable), for the
// resolv.conf options the README recommends and for systemd-resolved. Each client setup is a
// host of its own, so that they run side by side; each lookup is of a new name, so that
// resolved's cache answers none of them. With -v it logs what every lookup took as a table
// (median and max per cell, bench/RESULTS.md). The times depend on the machine's load and are
// not asserted; that every lookup succeeds is.
//
//	go test -run TestClientWait -v ./test/lab/ -args -wait.slow -wait.trials 7
func TestClientWait(t *testing.T) {
	if testing.Short() {
		t.Skip("takes about a minute (several with -wait.slow)")
	}
	if *waitTrials < 1 {
		t.Fatalf("-wait.trials %d: want at least 1", *waitTrials)
	}
	w := newWorld(t)
	body := pool("app.lan", webPort, backendAddrs)
	w.startDNS(w.dns1, body)
	w.startDNS(w.dns2, body)
	// Registered after the servers, so it runs before their Stop: a stopped coredns holds
	// SIGTERM until it is continued.
	t.Cleanup(func() {
		signalHost(w.dns1, syscall.SIGCONT)
		signalHost(w.dns2, syscall.SIGCONT)
	})

	var setups []resolverSetup
	hosts := map[string]*netlab.Host{}
	for _, s := range resolverSetups {
		if s.slow && !*waitSlow {
			t.Logf("not measured: %s (waits up to 20 s a lookup; add -wait.slow)", s.name)
			continue
		}
		if s.resolved {
			if err := resolvedUsable(*waitResolved); err != nil {
				t.Logf("not measured: %s: %v", s.name, err)
				continue
			}
		}
		h, err := w.lab.Host(s.host, s.addr)
		if err != nil {
			t.Fatal(err)
		}
		if err := h.SetResolvConf(s.resolvConf); err != nil {
			t.Fatal(err)
		}
		setups = append(setups, s)
		hosts[s.host] = h
	}

	freeze := func(h *netlab.Host) func() error { return func() error { return signalHost(h, syscall.SIGSTOP) } }
	thaw := func(h *netlab.Host) func() error { return func() error { return signalHost(h, syscall.SIGCONT) } }
	failures := []serverFailure{
		{"none: both up", func() error { return nil }, func() error { return nil }},
		{"dns1 frozen (SIGSTOP)", freeze(w.dns1), thaw(w.dns1)},
		{"dns1 unplugged (link down)", w.dns1.LinkDown, w.dns1.LinkUp},
		{"dns1 killed (port closed)", func() error { return signalHost(w.dns1, syscall.SIGKILL) },
			func() error { w.startDNS(w.dns1, body); return nil }},
		{"dns2 frozen (SIGSTOP)", freeze(w.dns2), thaw(w.dns2)},
	}

	// took[failure][setup][tool]: each setup's goroutine fills its own row.
	took := make([][][][]time.Duration, len(failures))
	for fi, f := range failures {
		took[fi] = make([][][]time.Duration, len(setups))
		// resolved starts afresh for every failure, on dns1 as its current server (the first
		// of DNS=), so that each failure hits the server it is using, as the glibc clients'
		// first nameserver is.
		var resolvers []*netlab.Process
		for _, s := range setups {
			if s.resolved {
				resolvers = append(resolvers, startResolved(t, hosts[s.host], *waitResolved))
			}
		}
		if err := f.cause(); err != nil {
			t.Fatalf("%s: %v", f.name, err)
		}
		var wg sync.WaitGroup
		for si, s := range setups {
			row := make([][]time.Duration, len(lookupTools))
			took[fi][si] = row
			wg.Add(1)
			go func() {
				defer wg.Done()
				for trial := 0; trial < *waitTrials; trial++ {
					for ti, tool := range lookupTools {
						name := fmt.Sprintf("f%dt%d%s.app.lan", fi, trial, tool.key)
						d, out, err := lookUp(hosts[s.host], tool.args(name))
						if err != nil || !tool.got(out) {
							t.Errorf("%s, %s: %s %s failed after %v: %v: %s", f.name, s.name, tool.name, name, d.Round(time.Millisecond), err, out)
						}
						row[ti] = append(row[ti], d)
					}
				}
			}()
		}
		wg.Wait()
		for _, p := range resolvers {
			t.Logf("%s: systemd-resolved's retries and switches:\n%s", f.name, resolvedSwitches(p.Output()))
			p.Stop()
		}
		if err := f.undo(); err != nil {
			t.Fatalf("undoing %s: %v", f.name, err)
		}
		for _, h := range []*netlab.Host{w.dns1, w.dns2} {
			awaitAnswer(t, w.client, h.Addr.String())
		}
	}

	var table strings.Builder
	table.WriteString("| failure | client setup | client | median | max | trials | each, in order (ms) |\n|---|---|---|---|---|---|---|\n")
	for fi, f := range failures {
		for si, s := range setups {
			for ti, tool := range lookupTools {
				d := took[fi][si][ti]
				each := make([]string, len(d))
				for i, x := range d {
					each[i] = fmt.Sprint(x.Milliseconds())
				}
				fmt.Fprintf(&table, "| %s | %s | %s | %s | %s | %d | %s |\n", f.name, s.name, tool.name,
					ms(median(d)), ms(slices.Max(d)), len(d), strings.Join(each, " "))
			}
		}
	}
	t.Logf("what each lookup took, from the start of the client program to its exit:\n%s", table.String())
}

// lookUp runs a client program on host and says how long it took, from its start to its exit.
func lookUp(h *netlab.Host, args []string) (time.Duration, string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", h.NS}, args...)...)
	begin := time.Now()
	out, err := cmd.CombinedOutput()
	return time.Since(begin), strings.TrimSpace(string(out)), err
}

// signalHost sends sig to every process in the host's namespace: on a DNS host, its coredns.
func signalHost(h *netlab.Host, sig syscall.Signal) error {
	out, err := exec.Command("ip", "netns", "pids", h.NS).Output()
	if err != nil {
		return fmt.Errorf("ip netns pids %s: %w", h.NS, err)
	}
	for _, f := range strings.Fields(string(out)) {
		var pid int
		if _, err := fmt.Sscan(f, &pid); err != nil || pid == os.Getpid() {
			continue
		}
		if err := syscall.Kill(pid, sig); err != nil {
			return fmt.Errorf("%v to process %d on %s: %w", sig, pid, h.Name, err)
		}
	}
	return nil
}

// awaitAnswer waits until the server answers a query from host.
func awaitAnswer(t *testing.T, from *netlab.Host, server string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err := from.Query(server, "lab.probe.", dns.TypeSOA, 500*time.Millisecond)
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s does not answer from %s: %v", server, from.Name, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// resolvedUsable says why bin cannot run as the lab's systemd-resolved, or nil.
func resolvedUsable(bin string) error {
	if _, err := os.Stat(bin); err != nil {
		// Installing the package would take over the machine's resolv.conf; unpacked, it runs here.
		return fmt.Errorf("no systemd-resolved (unpack Debian's package with dpkg-deb -x DIR and pass -wait.resolved DIR/lib/systemd/systemd-resolved, as in bench/RESULTS.md): %w", err)
	}
	if _, err := exec.LookPath("setpriv"); err != nil {
		return fmt.Errorf("needs setpriv from util-linux to run systemd-resolved unprivileged: %w", err)
	}
	return nil
}

// startResolved runs systemd-resolved on host with both healthdns servers in DNS=, and waits
// until its stub on 127.0.0.53 answers a name of the pool. It runs in the mount namespace of
// its own ip netns exec, on a tmpfs over /run/systemd, so that neither its drop-in nor the
// files it writes reach the machine's /run. Started as root it would switch to the
// systemd-resolve user, which a machine without the package lacks: it runs as nobody with the
// capabilities its unit file gives it.
func startResolved(t *testing.T, h *netlab.Host, bin string) *netlab.Process {
	t.Helper()
	script := fmt.Sprintf(`set -e
mount -t tmpfs -o mode=0755 tmpfs /run/systemd
mkdir -p /run/systemd/resolve /run/systemd/resolved.conf.d
chown 65534:65534 /run/systemd/resolve
cat >/run/systemd/resolved.conf.d/lab.conf <<EOF
[Resolve]
DNS=%s %s
DNSSEC=no
LLMNR=no
MulticastDNS=no
EOF
export SYSTEMD_LOG_LEVEL=debug SYSTEMD_LOG_TIME=1
caps=+setpcap,+net_bind_service,+net_raw
exec setpriv --reuid=65534 --regid=65534 --clear-groups --inh-caps=$caps --ambient-caps=$caps %s
`, dns1Addr, dns2Addr, bin)
	p, err := h.StartProcess("sh", "-c", script)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Stop() })
	answers := func() bool {
		r, err := h.Query("127.0.0.53", "ready.app.lan", dns.TypeA, time.Second)
		return err == nil && r.Rcode == dns.RcodeSuccess && len(r.Answer) > 0
	}
	if err := p.AwaitReady(10*time.Second, answers); err != nil {
		t.Fatal(err)
	}
	return p
}

// resolvedSwitches picks from systemd-resolved's debug log the lines that tell when it gave up
// on a server: the clients' figures show what that cost them.
func resolvedSwitches(log string) string {
	var picked []string
	for _, line := range strings.Split(log, "\n") {
		if strings.Contains(line, "Switching to") || strings.Contains(line, "Retrying transaction") ||
			strings.Contains(line, "downgrading feature level") {
			picked = append(picked, line)
		}
	}
	if len(picked) > 12 {
		picked = append(picked[:12], fmt.Sprintf("(and %d more)", len(picked)-12))
	}
	return strings.Join(picked, "\n")
}

func median(d []time.Duration) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func ms(d time.Duration) string { return fmt.Sprintf("%d ms", d.Milliseconds()) }
