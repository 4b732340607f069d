package wire

import (
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// A script that leaves a child running and exits 0 passes, and its child is killed with it: a
// probe that left one behind each time would fill the host's process table.
func TestExecKillsWhatASuccessLeaves(t *testing.T) {
	pidFile := filepath.Join(t.TempDir(), "pid")
	path := script(t, "sleep 301 & echo $! > "+pidFile+"; exit 0")
	if err := probeWithin(Exec(ExecSpec{Path: path}), netip.MustParseAddr("127.0.0.9"), answered); err != nil {
		t.Fatalf("error %v, want exit 0 to pass", err)
	}
	child := readPid(t, pidFile)
	waitFor(t, "the script's child "+strconv.Itoa(child)+" to be killed", func() bool { return !alive(child) })
}

// As PID 1 of a container, or as a subreaper, the process inherits what a script leaves, and a
// killed child that nobody reaps stays a zombie holding its pid. The test runs again in a
// process of its own that is a subreaper, as PID 1 is, and looks for the child itself to go.
func TestExecReapsWhatItInherits(t *testing.T) {
	if os.Getenv(childEnv) == "" {
		runChild(t, nil)
		return
	}
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		t.Fatalf("becoming a subreaper: %v", err)
	}
	pidFile := filepath.Join(t.TempDir(), "pid")
	path := script(t, "sleep 301 & echo $! > "+pidFile+"; exit 0")
	if err := probeWithin(Exec(ExecSpec{Path: path}), netip.MustParseAddr("127.0.0.9"), answered); err != nil {
		t.Fatalf("error %v, want exit 0 to pass", err)
	}
	child := readPid(t, pidFile)
	waitFor(t, "the script's child "+strconv.Itoa(child)+" to be reaped", func() bool {
		_, err := os.Stat("/proc/" + strconv.Itoa(child))
		return os.IsNotExist(err)
	})
}

// A script sees PATH and HEALTHDNS_BACKEND and nothing of CoreDNS's own environment (a token's
// path, a cloud's credentials).
func TestExecEnvironment(t *testing.T) {
	t.Setenv("HEALTHDNS_TEST_SECRET", "not for scripts")
	envFile := filepath.Join(t.TempDir(), "env")
	// /proc/$$/environ is what the script was given, before the shell adds PWD and the like.
	path := script(t, "tr '\\0' '\\n' < /proc/$$/environ > "+envFile)
	if err := probeWithin(Exec(ExecSpec{Path: path}), netip.MustParseAddr("127.0.0.9"), answered); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(envFile)
	if err != nil {
		t.Fatal(err)
	}
	got := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
	slices.Sort(got)
	want := []string{"HEALTHDNS_BACKEND=127.0.0.9", "PATH=" + ScriptPATH}
	if !slices.Equal(got, want) {
		t.Errorf("a script's environment:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// A CoreDNS given CAP_NET_RAW and CAP_NET_BIND_SERVICE as ambient capabilities (systemd's
// AmbientCapabilities=, as the shipped unit does) runs its scripts with none, and keeps both
// for itself. The test runs again as nobody with those two ambient capabilities.
func TestExecScriptsGetNoCapabilities(t *testing.T) {
	if os.Getenv(childEnv) == "" {
		if os.Geteuid() != 0 {
			t.Skip("needs root to start a process as nobody with ambient capabilities")
		}
		runChild(t, &syscall.SysProcAttr{
			Credential:  &syscall.Credential{Uid: 65534, Gid: 65534},
			AmbientCaps: []uintptr{unix.CAP_NET_RAW, unix.CAP_NET_BIND_SERVICE},
		})
		return
	}
	const both = 1<<unix.CAP_NET_RAW | 1<<unix.CAP_NET_BIND_SERVICE
	mine := capabilities(t, "/proc/self/status")
	if mine["CapAmb"] != both || mine["CapEff"] != both {
		t.Fatalf("the test's own capabilities %x, want CapAmb and CapEff %x: it proves nothing", mine, both)
	}
	capsFile := filepath.Join(t.TempDir(), "caps")
	// More than one run: capabilities belong to a thread, and each run may start from another.
	for range 5 {
		path := script(t, "grep ^Cap /proc/self/status > "+capsFile)
		if err := probeWithin(Exec(ExecSpec{Path: path}), netip.MustParseAddr("127.0.0.9"), answered); err != nil {
			t.Fatal(err)
		}
		got := capabilities(t, capsFile)
		for _, set := range []string{"CapAmb", "CapEff", "CapPrm"} {
			if got[set] != 0 {
				t.Errorf("a script's %s is %x, want none", set, got[set])
			}
		}
	}
	if after := capabilities(t, "/proc/self/status"); after["CapEff"] != both || after["CapPrm"] != both {
		t.Errorf("after scripts ran, the test's own capabilities %x, want CapEff and CapPrm %x", after, both)
	}
	c, err := net.ListenPacket("ip4:icmp", "127.0.0.1")
	if err != nil {
		t.Fatalf("a raw ICMP socket after scripts ran: %v", err)
	}
	c.Close()
}

// childEnv marks the copy of the test binary that runChild starts.
const childEnv = "HEALTHDNS_TEST_EXEC_CHILD"

// runChild runs test t again in a process of its own, started with attr, and reports its
// outcome. The binary is copied where any user may run it.
func runChild(t *testing.T, attr *syscall.SysProcAttr) {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Skip(err)
	}
	dir := t.TempDir()
	for _, d := range []string{filepath.Dir(dir), dir} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	b, err := os.ReadFile(exe)
	if err != nil {
		t.Fatal(err)
	}
	copied := filepath.Join(dir, filepath.Base(exe))
	if err := os.WriteFile(copied, b, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(copied, "-test.run=^"+t.Name()+"$", "-test.count=1", "-test.v", "-test.timeout=2m")
	cmd.Env = append(os.Environ(), childEnv+"=1", "TMPDIR=/tmp")
	cmd.Dir = "/"
	cmd.SysProcAttr = attr
	out, err := cmd.CombinedOutput()
	t.Logf("in a process of its own:\n%s", out)
	if err != nil {
		t.Fatalf("in a process of its own: %v", err)
	}
	if !strings.Contains(string(out), "--- PASS: "+t.Name()) {
		t.Fatalf("in a process of its own: %s did not run", t.Name())
	}
}

// capabilities reads the Cap* lines of a /proc status file: "CapEff" → its bits.
func capabilities(t *testing.T, path string) map[string]uint64 {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	sets := map[string]uint64{}
	for _, line := range strings.Split(string(b), "\n") {
		name, value, ok := strings.Cut(line, ":")
		if !ok || !strings.HasPrefix(name, "Cap") {
			continue
		}
		bits, err := strconv.ParseUint(strings.TrimSpace(value), 16, 64)
		if err != nil {
			t.Fatalf("%s: %q: %v", path, line, err)
		}
		sets[name] = bits
	}
	if _, ok := sets["CapAmb"]; !ok {
		t.Fatalf("%s has no CapAmb line:\n%s", path, b)
	}
	return sets
}

func readPid(t *testing.T, path string) int {
	t.Helper()
	var b []byte
	waitFor(t, path+" to be written", func() bool {
		var err error
		b, err = os.ReadFile(path)
		return err == nil && strings.HasSuffix(string(b), "\n")
	})
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	t.Cleanup(func() {
		if t.Failed() { // the child may still run: nothing of the test's is left running
			syscall.Kill(pid, syscall.SIGKILL)
		}
	})
	return pid
}
