// Package testnet is what the health packages' tests probe: loopback backends, and a network
// namespace of the test's own.
//
// RunInOwnNetns runs a test again inside a network namespace of its own, for the tests that need
// a host that does not answer, a route that does not exist or a sysctl of their own: the only
// addresses a test may probe (loopback) always answer, and sysctls such as
// net.ipv4.icmp_echo_ignore_all and ping_group_range are the namespace's, not the host's. The
// test binary re-runs itself inside the namespace with `ip netns exec`; outside, that needs root
// and iproute2, and the test skips without them.
package testnet

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
)

const env = "HEALTHDNS_TEST_NETNS"

// InOwnNetns reports whether this process is the copy running in the test's namespace.
func InOwnNetns() bool { return os.Getenv(env) != "" }

// RunInOwnNetns creates a namespace, runs test t again inside it and reports its outcome.
func RunInOwnNetns(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to create a network namespace")
	}
	ip, err := exec.LookPath("ip")
	if err != nil {
		t.Skip("needs iproute2's ip to create a network namespace")
	}
	exe, err := os.Executable()
	if err != nil {
		t.Skip(err)
	}
	ns := fmt.Sprintf("hdns-probe-test-%d", os.Getpid())
	if out, err := exec.Command(ip, "netns", "add", ns).CombinedOutput(); err != nil {
		t.Skipf("cannot create a network namespace: %v: %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command(ip, "netns", "del", ns).CombinedOutput(); err != nil {
			t.Errorf("deleting namespace %s: %v: %s", ns, err, out)
		}
	})
	if out, err := exec.Command(ip, "-n", ns, "link", "set", "lo", "up").CombinedOutput(); err != nil {
		t.Fatalf("loopback up in %s: %v: %s", ns, err, out)
	}
	cmd := exec.Command(ip, "netns", "exec", ns, exe, "-test.run=^"+t.Name()+"$", "-test.count=1", "-test.v", "-test.timeout=2m")
	cmd.Env = append(os.Environ(), env+"="+ns)
	out, err := cmd.CombinedOutput()
	t.Logf("in namespace %s:\n%s", ns, out)
	if err != nil {
		t.Fatalf("in namespace %s: %v", ns, err)
	}
	if !strings.Contains(string(out), "--- PASS: "+t.Name()) {
		t.Fatalf("in namespace %s: %s did not run", ns, t.Name())
	}
}

// Sysctl writes a namespaced sysctl; only call it inside the test's own namespace.
func Sysctl(t *testing.T, name, value string) {
	t.Helper()
	if !InOwnNetns() {
		t.Fatalf("refusing to write %s outside the test's namespace", name)
	}
	if err := os.WriteFile("/proc/sys/"+strings.ReplaceAll(name, ".", "/"), []byte(value), 0o644); err != nil {
		t.Fatal(err)
	}
}
