package netlab

import (
	"errors"
	"net"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// A second lab of the same prefix (another go test ./... of the project beside this one) waits
// for the first to close instead of removing its namespaces as stale.
func TestLabOfAPrefixWaitsForTheRunningOne(t *testing.T) {
	if err := Available(); err != nil {
		t.Skip(err)
	}
	const prefix = "hdnltest"
	first, err := New(prefix)
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	if _, err := first.Host("a", "198.18.9.1"); err != nil {
		t.Fatal(err)
	}
	second := make(chan *Lab, 1)
	go func() {
		l, err := New(prefix)
		if err != nil {
			t.Error(err)
		}
		second <- l
	}()
	// However long the second waits, it must not have torn the first lab down meanwhile.
	select {
	case l := <-second:
		if l != nil {
			l.Close()
		}
		t.Fatal("a second lab of the prefix started while the first ran")
	case <-time.After(500 * time.Millisecond):
	}
	out, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(out), prefix+"-a") {
		t.Fatalf("the first lab's host is gone while it runs:\n%s", out)
	}
	first.Close()
	select {
	case l := <-second:
		if l != nil {
			l.Close()
		}
	case <-time.After(60 * time.Second):
		t.Fatal("the second lab did not start within 60s of the first's close")
	}
}

// While a lab runs, its hosts' addresses are unreachable from the namespace the tests run in: a
// test's mistake fails here at once instead of leaving the machine. The route goes with the lab.
func TestLabAddressesUnreachableFromOutside(t *testing.T) {
	if err := Available(); err != nil {
		t.Skip(err)
	}
	lab, err := New("hdnlroute")
	if err != nil {
		t.Fatal(err)
	}
	defer lab.Close()
	const addr = "198.18.9.7"
	if _, err := lab.Host("a", addr); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("ip", "route", "show", "type", "unreachable").Output()
	if err != nil || !strings.Contains(string(out), addr) {
		t.Fatalf("ip route show type unreachable: %v\n%s", err, out)
	}
	_, err = net.DialTimeout("tcp", addr+":80", 5*time.Second)
	if !errors.Is(err, syscall.EHOSTUNREACH) {
		t.Errorf("a connection to the lab's host from outside: %v, want no route to host", err)
	}
	lab.Close()
	out, _ = exec.Command("ip", "route", "show", "type", "unreachable").Output()
	if strings.Contains(string(out), addr) {
		t.Errorf("the unreachable route outlived the lab:\n%s", out)
	}
}

// A capture holds what its host sent, and only that: a datagram from a to b is in a's capture,
// not in b's, and b's "port unreachable" answer is in b's.
func TestCaptureOutgoing(t *testing.T) {
	if err := Available(); err != nil {
		t.Skip(err)
	}
	lab, err := New("hdnlcap")
	if err != nil {
		t.Fatal(err)
	}
	defer lab.Close()
	a, err := lab.Host("a", "198.18.9.11")
	if err != nil {
		t.Fatal(err)
	}
	b, err := lab.Host("b", "198.18.9.12")
	if err != nil {
		t.Fatal(err)
	}
	began := time.Now()
	capA, err := a.CaptureOutgoing()
	if err != nil {
		t.Fatal(err)
	}
	capB, err := b.CaptureOutgoing()
	if err != nil {
		t.Fatal(err)
	}
	c, err := a.Dial("udp", "198.18.9.12:9", time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// Until b's answer is back: a's first datagram waits for ARP, and the answer for a's.
	deadline := time.Now().Add(10 * time.Second)
	for {
		c.Write([]byte("captured"))
		c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		if _, err := c.Read(make([]byte, 16)); errors.Is(err, syscall.ECONNREFUSED) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no port unreachable from b within 10s")
		}
	}
	sentA, err := capA.Stop()
	if err != nil {
		t.Fatal(err)
	}
	sentB, err := capB.Stop()
	if err != nil {
		t.Fatal(err)
	}
	ended := time.Now()
	for _, f := range append(sentA, sentB...) {
		if f.At.Before(began) || f.At.After(ended) {
			t.Errorf("a frame's kernel time %v is not within the capture (%v to %v)", f.At, began, ended)
		}
	}
	// IPv4 in Ethernet: protocol at 23, source at 26, destination at 30, the payload at 34.
	ipv4 := func(f Frame, proto byte, src, dst string) bool {
		d := f.Data
		return len(d) >= 34 && d[12] == 0x08 && d[13] == 0x00 && d[23] == proto &&
			net.IP(d[26:30]).String() == src && net.IP(d[30:34]).String() == dst
	}
	count := func(frames []Frame, proto byte, src, dst string) (n int) {
		for _, f := range frames {
			if ipv4(f, proto, src, dst) {
				n++
			}
		}
		return n
	}
	if count(sentA, syscall.IPPROTO_UDP, "198.18.9.11", "198.18.9.12") == 0 {
		t.Errorf("a's capture (%d frames) has no datagram to b", len(sentA))
	}
	if n := count(sentA, syscall.IPPROTO_ICMP, "198.18.9.12", "198.18.9.11"); n != 0 {
		t.Errorf("a's capture holds %d of b's port unreachable answers, which a received", n)
	}
	if count(sentB, syscall.IPPROTO_ICMP, "198.18.9.12", "198.18.9.11") == 0 {
		t.Errorf("b's capture (%d frames) has no port unreachable to a", len(sentB))
	}
	if n := count(sentB, syscall.IPPROTO_UDP, "198.18.9.11", "198.18.9.12"); n != 0 {
		t.Errorf("b's capture holds %d of a's datagrams, which b received", n)
	}
}

// A host's network sysctls are its own: setting one changes it inside the host and nowhere else.
func TestSysctlIsTheHosts(t *testing.T) {
	if err := Available(); err != nil {
		t.Skip(err)
	}
	lab, err := New("hdnlsys")
	if err != nil {
		t.Fatal(err)
	}
	defer lab.Close()
	a, err := lab.Host("a", "198.18.9.21")
	if err != nil {
		t.Fatal(err)
	}
	const path = "/proc/sys/net/ipv4/ping_group_range"
	read := func() string {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		return strings.Join(strings.Fields(string(b)), " ")
	}
	outside := read()
	if err := a.Sysctl("net.ipv4.ping_group_range=65534 65534"); err != nil {
		t.Fatal(err)
	}
	var inside string
	if err := a.Do(func() error { inside = read(); return nil }); err != nil {
		t.Fatal(err)
	}
	if inside != "65534 65534" {
		t.Errorf("inside the host: %q, want the value set", inside)
	}
	if got := read(); got != outside {
		t.Errorf("outside the host: %q, was %q", got, outside)
	}
	if err := a.Sysctl("net.ipv4.no_such_setting=1"); err == nil {
		t.Error("a sysctl that does not exist was set")
	}
}
