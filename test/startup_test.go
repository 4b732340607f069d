package test

import (
	"fmt"
	"net"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/healthdns/healthdns/test/harness"
	"github.com/miekg/dns"
)

// TestStartupProbesTogether starts a Corefile of 8 server blocks, each with one backend that
// never answers and timeout 2s. caddy runs the blocks' startup one after another; when each
// waited for its own first verdict, nothing was served for the sum of the timeouts (16 s, and
// after a power cut every block's backends may be down). The first probes of every block run
// together, so the first answer comes after about one timeout.
//
// This compares a duration, but not to a speed: waiting block after block takes about the sum of
// the timeouts (11.6 s and 16 s in two runs of the old code here), and the bound, half of it,
// leaves the process 6 s to start beyond the one timeout it must wait.
func TestStartupProbesTogether(t *testing.T) {
	t.Parallel()
	const blocks, timeout = 8, 2 * time.Second
	var ips []string
	for i := range blocks {
		ips = append(ips, fmt.Sprintf("127.0.0.%d", 170+i))
	}
	port := harness.FreePort(t, ips...)
	var conf strings.Builder
	for i, ip := range ips {
		silentBackend(t, ip, port)
		zone := fmt.Sprintf("block%d.lan", i)
		fmt.Fprintf(&conf, "%s:{{PORT}} {\n bind 127.0.0.1\n%s}\n", zone, harness.TCPPool(zone, port, "3s", timeout.String(), []string{ip}))
	}

	var answered time.Time
	s := harness.Launch(t, conf.String(), func(s *harness.Server) bool {
		r, err := s.Try("udp", "block0.lan.", dns.TypeA, 100*time.Millisecond)
		if err != nil {
			return false
		}
		answered = time.Now()
		if r.Rcode != dns.RcodeSuccess {
			t.Errorf("first reply: %s", dns.RcodeToString[r.Rcode])
		}
		return true
	})
	took := answered.Sub(s.Started)
	sum := blocks * timeout
	t.Logf("first answer %s after start; the blocks' timeouts add up to %s", took.Round(time.Millisecond), sum)
	if took >= sum/2 {
		t.Errorf("first answer %s after start: the blocks' first probes ran one after another (their timeouts add up to %s)", took.Round(time.Millisecond), sum)
	}
	// And startup did wait for the verdicts: with backends that answered (a refused connect
	// does at once) this test would show nothing.
	if took < timeout {
		t.Errorf("first answer %s after start, before one probe timeout (%s): the backends were not silent", took.Round(time.Millisecond), timeout)
	}
}

// silentBackend listens on ip:port with room for one connection in its accept queue, fills it
// and never accepts: the kernel then drops every further SYN, so a probe, by connect or by a
// half-open SYN, gets no answer, as from a host that is down. On loopback a closed port would
// refuse at once instead.
func silentBackend(t *testing.T, ip string, port int) {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	sa := &syscall.SockaddrInet4{Port: port}
	copy(sa.Addr[:], net.ParseIP(ip).To4())
	if err := syscall.Bind(fd, sa); err != nil {
		t.Fatalf("silent backend %s:%d: %v", ip, port, err)
	}
	if err := syscall.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	addr := net.JoinHostPort(ip, strconv.Itoa(port))
	filler, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		t.Fatalf("silent backend %s: filling its accept queue: %v", addr, err)
	}
	t.Cleanup(func() { filler.Close() })
	if c, err := net.DialTimeout("tcp", addr, 300*time.Millisecond); err == nil {
		c.Close()
		t.Fatalf("silent backend %s still accepts connections", addr)
	}
}
