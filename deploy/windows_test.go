package deploy

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/healthdns/healthdns/test/testkit"
	"github.com/miekg/dns"
)

// findWine returns Debian's wine64 loader: the wine64 package puts it in /usr/lib/wine, and
// only the wine package links it onto PATH. Under CI a missing wine fails the test, as .ci/run
// installs it: an install that went wrong must not pass as a run that tested less.
func findWine(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"wine64", "/usr/lib/wine/wine64", "wine"} {
		if path, err := exec.LookPath(name); err == nil {
			return path
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("wine64 not found under CI, where .ci/run installs it (apt-get install wine64)")
	}
	t.Skip("wine64 not found (apt-get install wine64; .ci/run installs it as root): the Windows build is not run")
	return ""
}

// buildWindows cross-compiles the coredns of ./build for windows/amd64 into dir, as the
// release script does.
func buildWindows(t *testing.T, dir string) string {
	t.Helper()
	exe := filepath.Join(dir, "coredns.exe")
	run(t, repoRoot(t), []string{"CGO_ENABLED=0", "GOOS=windows", "GOARCH=amd64"},
		"go", "build", "-trimpath", "-o", exe, "./build")
	return exe
}

// TestWindowsVet builds the binary for Windows and vets, tests included, the module's packages
// it is built from: the code behind build tags (exec's job objects, ICMP's setup, the reload
// signal) is otherwise never compiled on this Linux machine. The root package's and source's
// tests run coredns and etcd through test/harness, whose network lab (namespaces, packet
// capture) is Linux's alone: those two are built, not vetted.
func TestWindowsVet(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: vetting for Windows compiles CoreDNS's dependencies for it (minutes on a cold cache)")
	}
	windows := []string{"CGO_ENABLED=0", "GOOS=windows", "GOARCH=amd64"}
	run(t, repoRoot(t), windows, "go", "build", "-o", os.DevNull, "./build")
	const module = "github.com/healthdns/healthdns"
	list := run(t, repoRoot(t), windows, "go", "list", "-deps",
		"-f", "{{if .Module}}{{if eq .Module.Path \""+module+"\"}}{{.ImportPath}}{{end}}{{end}}", "./build")
	pkgs := slices.DeleteFunc(strings.Fields(list), func(p string) bool { return p == module || p == module+"/source" })
	if !slices.Contains(pkgs, module+"/health/internal/wire") {
		t.Fatalf("go list -deps ./build for windows: no health/internal/wire in %v", pkgs)
	}
	run(t, repoRoot(t), windows, "go", append([]string{"vet"}, pkgs...)...)
}

// wineTooOld is how Go's runtime fails under a Wine without bcryptprimitives.dll.
const wineTooOld = "bcryptprimitives.dll not found"

// wineNoUDPIoctl is how Go's UDP listen fails under Wine 8.0.
const wineNoUDPIoctl = "wsaioctl: winapi error #10045"

// TestWindowsWine runs the Windows build under Wine: it starts, answers a query on 127.0.0.1,
// probes two TCP backends on loopback, and takes out the one whose listener closes.
func TestWindowsWine(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: builds coredns for Windows and starts Wine (minutes on a cold cache and a new prefix)")
	}
	wine := findWine(t)
	dir := t.TempDir()
	exe := buildWindows(t, dir)

	// Two backends on one port, 127.0.0.1 and 127.0.0.2, served by this test.
	keep, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { keep.Close() })
	port := keep.Addr().(*net.TCPAddr).Port
	doomed, err := net.Listen("tcp", fmt.Sprintf("127.0.0.2:%d", port))
	if err != nil {
		t.Skipf("no second loopback listener on port %d: %v", port, err)
	}
	t.Cleanup(func() { doomed.Close() })
	for _, l := range []net.Listener{keep, doomed} {
		go func() {
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				c.Close()
			}
		}()
	}

	dnsPort := freeUDPPort(t)
	corefile := fmt.Sprintf(`.:%d {
    bind 127.0.0.1
    healthdns win.test {
        backend 127.0.0.1
        backend 127.0.0.2
        check tcp %d
        interval 1s
        timeout 500ms
        answers 2
    }
}
`, dnsPort, port)
	writeFile(t, filepath.Join(dir, "Corefile"), corefile)

	// Wine's first start creates the prefix: a minute or more on a busy machine.
	prefix := filepath.Join(dir, "prefix")
	env := append(os.Environ(), "WINEPREFIX="+prefix, "WINEDEBUG=-all", "HOME="+dir, "DISPLAY=")
	boot, cancelBoot := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancelBoot()
	wineboot := exec.CommandContext(boot, wine, "wineboot", "-i")
	wineboot.Env = env
	if b, err := wineboot.CombinedOutput(); err != nil {
		t.Fatalf("wineboot -i in %s: %v\n%s", prefix, err, b)
	}
	prng := filepath.Join(prefix, "drive_c", "windows", "system32", "bcryptprimitives.dll")
	if _, err := os.Stat(prng); os.IsNotExist(err) { // Wine 9 and later have their own
		writeFile(t, prng, string(processPrngForwarder()))
	}

	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, wine, exe, "-conf", "Corefile")
	cmd.Dir = dir // Wine maps it to a Z: path, in which Corefile is found
	cmd.Env = env
	out := &testkit.Output{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting %s %s: %v", wine, exe, err)
	}
	// Wine's wineserver may hold the output's pipe after the program ends: Wait gives it 10 s.
	cmd.WaitDelay = 10 * time.Second
	var waitErr error
	exited := make(chan struct{})
	go func() { waitErr = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		cancel()
		<-exited
		// The prefix's wineserver outlives the program for a few seconds; it goes with -k.
		server := exec.Command(filepath.Join(filepath.Dir(wine), "wineserver"), "-k")
		server.Env = cmd.Env
		server.Run()
		if t.Failed() {
			t.Logf("coredns.exe under wine wrote:\n%s", out.String())
		}
	})

	want := func(addrs ...string) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Minute)
		var got []string
		var qerr error
		for time.Now().Before(deadline) {
			select {
			case <-exited:
				if strings.Contains(out.String(), wineTooOld) {
					t.Skipf("this Wine cannot start a Go %s Windows program: %q; Go's runtime loads it "+
						"(ProcessPrng) since Go 1.22, and Wine has it from 9.0 (Debian bookworm's wine64 is 8.0)",
						runtime.Version(), wineTooOld)
				}
				if strings.Contains(out.String(), wineNoUDPIoctl) {
					t.Skipf("this Wine cannot open Go %s's UDP listener: %q (WSAEOPNOTSUPP from the "+
						"WSAIoctl that Go's net package makes on every UDP socket); what it wrote:\n%s",
						runtime.Version(), wineNoUDPIoctl, out.String())
				}
				t.Fatalf("coredns.exe under wine exited: %v\n%s", waitErr, out.String())
			default:
			}
			got, qerr = query(dnsPort, "www.win.test.")
			if qerr == nil && slices.Equal(got, addrs) {
				return
			}
			time.Sleep(200 * time.Millisecond)
		}
		t.Fatalf("www.win.test never answered %v: last %v (%v)", addrs, got, qerr)
	}
	want("127.0.0.1", "127.0.0.2")
	doomed.Close()
	want("127.0.0.1")
}

// query asks 127.0.0.1:port for name's A records and returns them sorted.
func query(port int, name string) ([]string, error) {
	m := new(dns.Msg)
	m.SetQuestion(name, dns.TypeA)
	c := &dns.Client{Timeout: time.Second}
	r, _, err := c.Exchange(m, fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		return nil, err
	}
	if r.Rcode != dns.RcodeSuccess {
		return nil, fmt.Errorf("rcode %s", dns.RcodeToString[r.Rcode])
	}
	var addrs []string
	for _, rr := range r.Answer {
		if a, ok := rr.(*dns.A); ok {
			addrs = append(addrs, a.A.String())
		}
	}
	slices.Sort(addrs)
	return addrs, nil
}

// freeUDPPort is a UDP port on 127.0.0.1 that was free a moment ago.
func freeUDPPort(t *testing.T) int {
	t.Helper()
	c, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).Port
}
