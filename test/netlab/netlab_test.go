package netlab

import (
	"errors"
	"net"
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
