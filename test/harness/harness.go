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
	"testing"

	"github.com/healthdns/healthdns/test/netlab"
)

// binary is the coredns that Main built. It is written once, before any test runs, and only
// read afterwards.
var binary string

// Main builds coredns from ./build into a temporary directory, runs the tests and removes the
// directory. Call it from TestMain: os.Exit(harness.Main(m)). Building once per package run
// keeps the tests from compiling CoreDNS over and over.
func Main(m *testing.M) int {
	dir, err := os.MkdirTemp("", "healthdns-test-")
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

// Binary returns the path of the coredns that Main built.
func Binary(t testing.TB) string {
	t.Helper()
	if binary == "" {
		t.Fatal("no coredns binary: the package's TestMain must call harness.Main")
	}
	return binary
}
