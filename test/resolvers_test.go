//go:build linux

package test

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

	"github.com/healthdns/healthdns/test/harness"
	"github.com/healthdns/healthdns/test/netlab"
	"github.com/miekg/dns"
)

// TestLANResolvers runs the README's Unbound, dnsmasq and CoreDNS examples (section "Using it
// from the LAN's resolver") in front of two healthdns servers with the same Corefile, and sees a
// failover through each: the pool answers its preferred backend, and once that backend stops,
// every resolver moves to the other one after the pool's `ttl 1` has run out of its cache.
//
// The resolvers' configurations are the README's blocks, read from README.md, with only the two
// servers' addresses replaced by loopback ones (and the lines a test needs to run a resolver
// unprivileged on a port of its own put before them), so the README cannot show a snippet the
// test does not run. Unbound and dnsmasq run with their rebind protection on (`private-address`,
// `stop-dns-rebind`), which would drop the pool's loopback answers if the README's
// `private-domain` and `rebind-domain-ok` did not let them through.
func TestLANResolvers(t *testing.T) {
	t.Parallel()
	const preferred, standby = "127.0.0.251", "127.0.0.252"
	port, backends := harness.StartBackends(t, preferred, standby)
	corefile := "app.lan:{{PORT}} {\n bind 127.0.0.1\n" +
		harness.TCPPool("app.lan", port, "200ms", "100ms", nil,
			"backend "+preferred+" priority 200", "backend "+standby+" priority 100", "ttl 1") +
		"}\n"
	first, second := harness.Start(t, corefile), harness.Start(t, corefile)
	servers := map[string]string{"10.0.0.2": first.Addr, "10.0.0.3": second.Addr}

	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	type resolver struct {
		name string
		addr string // where it answers
	}
	var resolvers []resolver
	for _, r := range []struct {
		name, pkg string
		start     func(t *testing.T, bin, example string, servers map[string]string) string
		block     string // a line of the README's block
	}{
		{"unbound", "unbound", startUnbound, "stub-zone:"},
		{"dnsmasq", "dnsmasq", startDnsmasq, "server=/app.lan/"},
		{"coredns", "", startForwarder, "forward . 10.0.0.2 10.0.0.3"},
	} {
		example := readmeBlock(t, string(readme), r.block)
		bin := harness.Binary(t)
		if r.pkg != "" {
			if bin = installed(r.name); bin == "" {
				t.Run(r.name, func(t *testing.T) {
					t.Skipf("%s is not installed (Debian package %s; .ci/run installs it as root)", r.name, r.pkg)
				})
				continue
			}
		}
		resolvers = append(resolvers, resolver{r.name, r.start(t, bin, example, servers)})
	}

	answers := func(addr string) []string {
		m := new(dns.Msg)
		m.SetQuestion("www.app.lan.", dns.TypeA)
		r, _, err := (&dns.Client{Timeout: time.Second}).Exchange(m, addr)
		if err != nil || r.Rcode != dns.RcodeSuccess {
			return nil
		}
		return harness.AnswerAddrs(r)
	}
	follow := func(want, why string) {
		for _, r := range resolvers {
			t.Run(r.name+"/"+why, func(t *testing.T) {
				var got []string
				harness.Eventually(t, 15*time.Second, func() bool {
					got = answers(r.addr)
					return harness.SameSet(got, want)
				}, fmt.Sprintf("%s to answer www.app.lan with %s; last answer %v", r.name, want, got))
			})
		}
	}
	follow(preferred, "the preferred backend")
	backends[preferred].Stop()
	follow(standby, "the standby once the preferred stopped")
	backends[preferred].Start()
	follow(preferred, "the preferred once it is back")
}

// readmeBlock returns the README's fenced code block that holds line, and fails if there is not
// exactly one.
func readmeBlock(t *testing.T, readme, line string) string {
	t.Helper()
	var found []string
	for _, m := range regexp.MustCompile("(?ms)^```[a-z]*\n(.*?)^```$").FindAllStringSubmatch(readme, -1) {
		if strings.Contains(m[1], line) {
			found = append(found, m[1])
		}
	}
	if len(found) != 1 {
		t.Fatalf("README.md has %d code blocks holding %q, want 1", len(found), line)
	}
	return found[0]
}

// localize replaces the README's server addresses with the test's, as format writes them, and
// fails if any 10.0.0.x address is left: nothing in the test may send to an address outside
// the loopback range.
func localize(t *testing.T, example string, servers map[string]string, format func(host, port string) string) string {
	t.Helper()
	var pairs []string
	for readmeAddr, addr := range servers {
		host, port, _ := net.SplitHostPort(addr)
		pairs = append(pairs, readmeAddr, format(host, port))
	}
	out := strings.NewReplacer(pairs...).Replace(example)
	if left := regexp.MustCompile(`10\.0\.0\.\d+`).FindString(out); left != "" {
		t.Fatalf("README example still names %s after its servers were replaced:\n%s", left, out)
	}
	return out
}

// daemon runs a resolver in the foreground until the test ends, and returns its address once
// it answers a query. It is killed with the test binary too, so that no resolver is left
// listening.
func daemon(t *testing.T, addr string, output *netlab.Buffer, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Stdout, cmd.Stderr = output, output
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", name, err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("%s %s output:\n%s", name, strings.Join(args, " "), output)
		}
	})
	up := harness.Poll(15*time.Second, 25*time.Millisecond, func() bool {
		select {
		case <-exited:
			return true
		default:
		}
		m := new(dns.Msg)
		m.SetQuestion("app.lan.", dns.TypeSOA)
		_, _, err := (&dns.Client{Timeout: 250 * time.Millisecond}).Exchange(m, addr)
		return err == nil
	})
	select {
	case <-exited:
		t.Fatalf("%s exited (%v); output:\n%s", name, cmd.ProcessState, output)
	default:
	}
	if !up {
		t.Fatalf("%s did not answer on %s within 15s; output:\n%s", name, addr, output)
	}
	return addr
}

// installed returns the path of a resolver's binary, or "" when it is not installed. Debian
// puts both in /usr/sbin, which a non-root PATH may lack.
func installed(name string) string {
	if path, err := exec.LookPath(name); err == nil {
		return path
	}
	path := filepath.Join("/usr/sbin", name)
	if fi, err := os.Stat(path); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
		return path
	}
	return ""
}

// startUnbound runs Unbound on the README's example. Its own lines: a port on 127.0.0.1, no
// daemon, chroot, user change, pid file or syslog; queries to 127.0.0.0/8 allowed (Unbound
// refuses them by default) and sent only from 127.0.0.1, which the kernel does not route
// anywhere else; the iterator alone, as no trust anchor is configured; and rebind protection for
// the loopback range, which the example's private-domain must exempt the zone from.
func startUnbound(t *testing.T, bin, example string, servers map[string]string) string {
	dir := t.TempDir()
	port := harness.FreePort(t)
	conf := fmt.Sprintf(`server:
    interface: 127.0.0.1
    port: %d
    outgoing-interface: 127.0.0.1
    do-ip6: no
    do-daemonize: no
    username: ""
    chroot: ""
    directory: %q
    pidfile: ""
    use-syslog: no
    logfile: ""
    num-threads: 1
    do-not-query-localhost: no
    access-control: 127.0.0.0/8 allow
    module-config: "iterator"
    private-address: 127.0.0.0/8
`, port, dir) + localize(t, example, servers, func(host, port string) string { return host + "@" + port })
	path := filepath.Join(dir, "unbound.conf")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	return daemon(t, net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), &netlab.Buffer{}, bin, "-d", "-c", path)
}

// startDnsmasq runs dnsmasq on the README's example. Its own lines: a port on 127.0.0.1 only,
// no upstream but the example's (no resolv.conf) and no hosts file, no user change or pid file,
// logs to stderr, and rebind protection on, which the example's rebind-domain-ok must exempt
// the zone from (the loopback range counts as private to it).
func startDnsmasq(t *testing.T, bin, example string, servers map[string]string) string {
	dir := t.TempDir()
	port := harness.FreePort(t)
	user := ""
	if os.Geteuid() == 0 {
		user = "user=root\n" // not the packaged "dnsmasq" user, which a bare machine may lack
	}
	conf := fmt.Sprintf(`port=%d
listen-address=127.0.0.1
bind-interfaces
no-resolv
no-hosts
pid-file=
log-facility=-
stop-dns-rebind
`, port) + user + localize(t, example, servers, func(host, port string) string { return host + "#" + port })
	path := filepath.Join(dir, "dnsmasq.conf")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	return daemon(t, net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), &netlab.Buffer{}, bin, "--keep-in-foreground", "--conf-file="+path)
}

// startForwarder runs the README's CoreDNS forwarding block in another coredns (the one the
// tests build, which has forward), on a port of its own and bound to 127.0.0.1.
func startForwarder(t *testing.T, _, example string, servers map[string]string) string {
	conf := localize(t, example, servers, func(host, port string) string { return host + ":" + port })
	if !strings.HasPrefix(conf, "app.lan {\n") {
		t.Fatalf("README's CoreDNS example does not start with 'app.lan {':\n%s", conf)
	}
	conf = "app.lan:{{PORT}} {\n    bind 127.0.0.1\n" + strings.TrimPrefix(conf, "app.lan {\n")
	return harness.Start(t, conf).Addr
}
