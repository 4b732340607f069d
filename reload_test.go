package healthdns

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/healthdns/healthdns/test/harness"

	"github.com/coredns/caddy"
	"github.com/coredns/coredns/core/dnsserver"
	_ "github.com/coredns/coredns/core/plugin" // bind, and the rest of a real chain
	"github.com/miekg/dns"
	"go.uber.org/goleak"

	"github.com/healthdns/healthdns/health"
)

func init() {
	// The build/ main does this for the binary; in-process tests need the directive too.
	for i, d := range dnsserver.Directives {
		if d == "hosts" {
			dnsserver.Directives = append(dnsserver.Directives[:i:i], append([]string{pluginName}, dnsserver.Directives[i:]...)...)
			return
		}
	}
}

// listenTCP accepts and closes connections on port of every host (port 0: a free one of the
// first), and returns the port.
func listenTCP(t *testing.T, port int, hosts ...string) int {
	t.Helper()
	for _, h := range hosts {
		port = acceptOn(t, net.JoinHostPort(h, strconv.Itoa(port)))
	}
	return port
}

func acceptOn(t *testing.T, addr string) int {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	return ln.Addr().(*net.TCPAddr).Port
}

func corefile(dnsPort int, body string) caddy.Input {
	return caddy.CaddyfileInput{
		Contents:       []byte(fmt.Sprintf(".:%d {\n bind 127.0.0.1\n %s\n}\n", dnsPort, body)),
		Filepath:       "Corefile",
		ServerTypeName: "dns",
	}
}

// freeUDPPort returns a port free for both UDP and TCP on 127.0.0.1, where the server listens on
// both: a port only UDP had free was sometimes held by a TCP probe's connection.
func freeUDPPort(t *testing.T) int {
	t.Helper()
	return harness.FreePort(t)
}

func queryA(t *testing.T, port int, name string) []string {
	t.Helper()
	m := new(dns.Msg)
	m.SetQuestion(name, dns.TypeA)
	r, err := dns.Exchange(m, fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		t.Fatalf("query %s: %v", name, err)
	}
	var got []string
	for _, rr := range r.Answer {
		got = append(got, rr.(*dns.A).A.String())
	}
	return got
}

// awaitServing waits until the instance that owns port answers over UDP and over TCP. CoreDNS's
// Stop skips a server that has not started serving yet (miekg/dns refuses to shut down a server
// that is not started, and a server not yet created is not in the list), and that server then
// serves forever: an instance must be serving before the next reload or Stop, or Wait hangs.
func awaitServing(t *testing.T, port int) {
	t.Helper()
	for _, network := range []string{"udp", "tcp"} {
		c := dns.Client{Net: network, Timeout: time.Second}
		m := new(dns.Msg)
		m.SetQuestion("app.lan.", dns.TypeA)
		deadline := time.Now().Add(10 * time.Second)
		for {
			_, _, err := c.Exchange(m, fmt.Sprintf("127.0.0.1:%d", port))
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("not serving over %s: %v", network, err)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
}

func tcpTarget(addr string, port int) health.Target {
	return health.Target{
		Addr: netip.MustParseAddr(addr),
		Spec: health.Spec{Check: health.Check{Kind: health.TCP, Port: uint16(port)}, Interval: 100 * time.Millisecond, Timeout: 50 * time.Millisecond, Rise: 2, Fall: 2},
	}
}

// TestReload follows docs/DESIGN.md "Reload, precisely": a reload adopts running loops, a failed
// reload (at setup or at listen) leaks nothing and keeps the old instance serving, and shutdown
// stops every goroutine the plugin started.
func TestReload(t *testing.T) {
	ignore := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, ignore) }) // registered first, so it runs last

	port := listenTCP(t, 0, "127.0.0.1", "127.0.0.2", "127.0.0.3", "127.0.0.4")
	dnsPort := freeUDPPort(t)
	pool := func(backends ...string) string {
		return fmt.Sprintf("healthdns app.lan {\n backend %s\n check tcp %d\n interval 100ms\n timeout 50ms\n answers 8\n }",
			strings.Join(backends, "\n backend "), port)
	}

	inst, err := caddy.Start(corefile(dnsPort, pool("127.0.0.1")))
	if err != nil {
		t.Fatal(err)
	}
	awaitServing(t, dnsPort)
	first, ok := proc.targets.Lookup(tcpTarget("127.0.0.1", port))
	if !ok || !first.IsChecked() || !first.Up() {
		t.Fatal("not probed and up after start")
	}
	if got := queryA(t, dnsPort, "app.lan."); len(got) != 1 {
		t.Fatalf("answer %v", got)
	}

	// A good reload adds a backend and adopts the running loop of the first.
	inst, err = inst.Restart(corefile(dnsPort, pool("127.0.0.1", "127.0.0.2")))
	if err != nil {
		t.Fatal(err)
	}
	awaitServing(t, dnsPort)
	if again, _ := proc.targets.Lookup(tcpTarget("127.0.0.1", port)); again != first {
		t.Fatal("reload restarted the probe loop instead of adopting it")
	}
	if proc.targets.Len() != 2 {
		t.Fatalf("%d targets after reload, want 2", proc.targets.Len())
	}
	if got := queryA(t, dnsPort, "app.lan."); len(got) != 2 {
		t.Fatalf("answer after reload %v", got)
	}

	// A reload that fails in setup changes nothing.
	if _, err := inst.Restart(corefile(dnsPort, "healthdns app.lan {\n backend 127.0.0.300\n }")); err == nil {
		t.Fatal("bad Corefile reloaded")
	}
	// A reload that passes setup and OnStartup but cannot listen is discarded without its
	// OnShutdown: what its OnStartup acquired must be given back.
	// It has a pool of every kind, so that every goroutine a pool owns ran: a backends file's
	// watch, an etcd source's (its etcd refuses: nothing listens on port 9) and the agreement
	// under nopreempt.
	busy := listenTCP(t, 0, "127.0.0.1")
	list := filepath.Join(t.TempDir(), "file.lan")
	if err := os.WriteFile(list, []byte("127.0.0.3\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	everyKind := pool("127.0.0.1", "127.0.0.2", "127.0.0.3") +
		fmt.Sprintf("\nhealthdns file.lan {\n backends_file %s\n check tcp %d\n }", list, port) +
		fmt.Sprintf("\nhealthdns etcd.lan {\n backends_etcd {\n endpoint http://127.0.0.1:9\n }\n backend 127.0.0.4 priority 200\n backend 127.0.0.2\n nopreempt\n check tcp %d\n }", port)
	badInput := corefile(dnsPort, everyKind).(caddy.CaddyfileInput)
	badInput.Contents = append(badInput.Contents, fmt.Sprintf("tcp://.:%d {\n bind 127.0.0.1\n whoami\n}\n", busy)...)
	if _, err := inst.Restart(badInput); err == nil {
		t.Fatal("reload onto a busy port succeeded")
	}
	if proc.targets.Len() != 2 {
		t.Fatalf("%d targets after failed reloads, want 2 (the failed instance leaked its loops)", proc.targets.Len())
	}
	if got := queryA(t, dnsPort, "app.lan."); len(got) != 2 {
		t.Fatalf("old instance stopped answering after failed reloads: %v", got)
	}

	// Five more reloads leave exactly the loops the last one needs.
	for i := range 5 {
		backends := []string{"127.0.0.1"}
		if i%2 == 0 {
			backends = append(backends, "127.0.0.4")
		}
		if inst, err = inst.Restart(corefile(dnsPort, pool(backends...))); err != nil {
			t.Fatal(err)
		}
		awaitServing(t, dnsPort)
	}
	if proc.targets.Len() != 2 {
		t.Fatalf("%d targets, want 2", proc.targets.Len())
	}

	errs := inst.ShutdownCallbacks()
	if len(errs) != 0 {
		t.Fatal(errs)
	}
	inst.Stop()
	inst.Wait()
	if proc.targets.Len() != 0 {
		t.Fatalf("%d targets still probed after shutdown", proc.targets.Len())
	}
}
