package wire

import (
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
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
