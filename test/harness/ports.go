package harness

import (
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
)

// given holds every port handed out in this process. Ports belong to the process, not to one
// test, so the allocator is the process's too: parallel tests must never be given one port twice.
var given = struct {
	sync.Mutex
	ports map[int]bool
}{ports: map[int]bool{}}

// FreePort returns a port that is free for both UDP and TCP on 127.0.0.1 and on every extra
// address given, and that no other caller in this process has been given.
func FreePort(t testing.TB, extra ...string) int {
	t.Helper()
	port, err := TakePort(extra...)
	if err != nil {
		t.Fatal(err)
	}
	return port
}

// TakePort is FreePort for callers without a testing.TB.
func TakePort(extra ...string) (int, error) {
	for range 100 {
		port, err := probePort(extra)
		if err != nil {
			return 0, err
		}
		if port == 0 {
			continue
		}
		given.Lock()
		taken := given.ports[port]
		given.ports[port] = true
		given.Unlock()
		if !taken && claim(port) {
			return port, nil
		}
	}
	return 0, errors.New("no free port")
}

// claimDir holds one lock file per port claimed by some test process of this machine.
var claimDir = filepath.Join(os.TempDir(), "healthdns-test-ports")

// claim takes port for this process against every other test process, until it exits: `go test
// ./...` runs packages as processes of their own, and coredns listens with SO_REUSEPORT, so two
// processes handed one port by the kernel in turn would share it, each answering half the
// queries. The claim is an exclusive flock on the port's file, which the kernel drops when the
// process ends, however it ends. Where no lock can be had the port is taken unclaimed.
func claim(port int) bool {
	if err := os.MkdirAll(claimDir, 0o777); err != nil {
		return true
	}
	f, err := os.OpenFile(filepath.Join(claimDir, strconv.Itoa(port)), os.O_CREATE|os.O_RDWR, 0o666)
	if err != nil {
		return true
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return !errors.Is(err, syscall.EWOULDBLOCK) // held by another process: pick another
	}
	claims.Lock()
	claims.files = append(claims.files, f) // kept open: the lock lasts as long as the process
	claims.Unlock()
	return true
}

// claims keeps the claimed ports' files open for the life of the process.
var claims struct {
	sync.Mutex
	files []*os.File
}

// probePort asks the kernel for a free TCP port on 127.0.0.1 and returns it if it is free for
// UDP there and for TCP on every extra address too, 0 if not.
func probePort(extra []string) (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	port := ln.Addr().(*net.TCPAddr).Port
	var held []io.Closer
	defer func() {
		for _, c := range held {
			c.Close()
		}
	}()
	pc, err := net.ListenPacket("udp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		return 0, nil
	}
	held = append(held, pc)
	for _, ip := range extra {
		l, err := net.Listen("tcp", net.JoinHostPort(ip, strconv.Itoa(port)))
		if err != nil {
			return 0, nil
		}
		held = append(held, l)
	}
	return port, nil
}
