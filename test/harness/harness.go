// Package harness runs the real coredns binary built from ./build for integration tests and
// benchmarks: it builds the binary once per test binary (Main), starts it on 127.0.0.1 ports
// that no other caller in the process is given (FreePort), starts TCP backends for it to check
// (StartBackends), talks DNS to it, reloads it, and reads its metrics with Prometheus's own text
// parser (Scrape).
//
// Nothing here sends traffic outside 127.0.0.0/8 and ::1.
package harness

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"

	"github.com/healthdns/healthdns/test/netlab"
)

// binary is the coredns that Main built, in dir. Both are written once, before any test runs,
// and only read afterwards.
var binary, dir string

// Main builds coredns from ./build into a temporary directory, runs the tests and removes the
// directory. Call it from TestMain: os.Exit(harness.Main(m)). Building once per package run
// keeps the tests from compiling CoreDNS over and over.
func Main(m *testing.M) int {
	var err error
	dir, err = os.MkdirTemp("", "healthdns-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "FATAL:", err)
		return 2
	}
	defer os.RemoveAll(dir)
	if binary, err = netlab.BuildCoreDNS(dir); err != nil {
		fmt.Fprintln(os.Stderr, "FATAL:", err)
		return 2
	}
	return m.Run()
}

// Healthdnsctl returns the path of cmd/healthdnsctl, built on first use beside Main's coredns,
// and removed with it.
func Healthdnsctl(t testing.TB) string {
	t.Helper()
	if dir == "" {
		t.Fatal("no build directory: the package's TestMain must call harness.Main")
	}
	bin, err := buildHealthdnsctl()
	if err != nil {
		t.Fatal(err)
	}
	return bin
}

var buildHealthdnsctl = sync.OnceValues(func() (string, error) {
	bin := filepath.Join(dir, "healthdnsctl")
	cmd := exec.Command("go", "build", "-o", bin, "github.com/healthdns/healthdns/cmd/healthdnsctl")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("building healthdnsctl: %v\n%s", err, out)
	}
	return bin, nil
})

// Binary returns the path of the coredns that Main built.
func Binary(t testing.TB) string {
	t.Helper()
	if binary == "" {
		t.Fatal("no coredns binary: the package's TestMain must call harness.Main")
	}
	return binary
}
