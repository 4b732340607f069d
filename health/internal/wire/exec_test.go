//go:build unix

package wire

import (
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// script writes an executable shell script into a directory of the test's own.
func script(t *testing.T, body string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "check")
	if err := os.WriteFile(path, []byte("#!/bin/sh\n"+body+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestExec(t *testing.T) {
	addr := netip.MustParseAddr("127.0.0.9")
	tests := []struct {
		name string
		body string
		args []string
		want string // the error's text after "exec PATH: "; "" to pass
	}{
		{"exit 0 passes", "exit 0", nil, ""},
		{"exit 1 fails", "exit 1", nil, "exit 1"},
		{"first line is the reason", "echo 'replica lag 42s'; echo second line; exit 2", nil, "exit 2: replica lag 42s"},
		{"stderr counts", "echo 'no route' >&2; exit 3", nil, "exit 3: no route"},
		{"backend in the environment", `[ "$HEALTHDNS_BACKEND" = 127.0.0.9 ] || { echo "got $HEALTHDNS_BACKEND"; exit 1; }`, nil, ""},
		{"backend in an argument", `[ "$1" = "--host=127.0.0.9" ] || { echo "got $1"; exit 1; }`, []string{"--host={backend}"}, ""},
		{"never through a shell", `[ "$1" = '$(touch /nonexistent)' ] || exit 1`, []string{"$(touch /nonexistent)"}, ""},
		{"long line cut", "printf '%0300d' 0; exit 1", nil, "exit 1: " + strings.Repeat("0", execReasonLen)},
	}
	slots := NewExecSlots()
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := script(t, tc.body)
			err := probeWithin(Exec(ExecSpec{Path: path, Args: tc.args}, slots), addr, 5*time.Second)
			want := ""
			if tc.want != "" {
				want = "exec " + path + ": " + tc.want
			}
			if (err == nil) != (want == "") || (err != nil && err.Error() != want) {
				t.Errorf("error %v, want %q", err, want)
			}
		})
	}
}

// A script that hangs past the timeout is killed with everything it started: no process of its
// group is left.
func TestExecKilledAtTheTimeout(t *testing.T) {
	pidFile := filepath.Join(t.TempDir(), "pid")
	path := script(t, "sleep 60 & echo $! > "+pidFile+"; wait")
	start := time.Now()
	err := probeWithin(Exec(ExecSpec{Path: path}, NewExecSlots()), netip.MustParseAddr("127.0.0.9"), 300*time.Millisecond)
	if err == nil || time.Since(start) > 5*time.Second {
		t.Fatalf("error %v after %v, want a failure at the timeout", err, time.Since(start))
	}
	b, rerr := os.ReadFile(pidFile)
	if rerr != nil {
		t.Fatal(rerr)
	}
	child, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	deadline := time.Now().Add(5 * time.Second)
	for alive(child) {
		if time.Now().After(deadline) {
			t.Fatalf("the script's child %d outlived the probe", child)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// alive reports whether pid runs: a killed process whose parent is gone may stay a zombie
// until an init reaps it, which a container may not have.
func alive(pid int) bool {
	if syscall.Kill(pid, 0) != nil {
		return false
	}
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return true // no /proc to tell a zombie by
	}
	fields := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+1:]))
	return len(fields) == 0 || fields[0] != "Z"
}

// Runs are bounded: a probe that finds every slot taken fails at once, it does not queue.
func TestExecBounded(t *testing.T) {
	slots := make(ExecSlots, 1)
	slots <- struct{}{} // the one slot is taken
	err := Exec(ExecSpec{Path: script(t, "exit 0")}, slots)(context.Background(), netip.MustParseAddr("127.0.0.9"))
	if err == nil || !strings.Contains(err.Error(), "not run: 1 checks already running") {
		t.Errorf("error %v, want not run", err)
	}
}

func TestExecCannotStart(t *testing.T) {
	err := probeWithin(Exec(ExecSpec{Path: "/nonexistent/check"}, NewExecSlots()), netip.MustParseAddr("127.0.0.9"), time.Second)
	if err == nil || !strings.HasPrefix(err.Error(), "exec /nonexistent/check: ") {
		t.Errorf("error %v", err)
	}
}

func TestScriptSafe(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("ScriptSafe checks only when running as root")
	}
	safe := script(t, "exit 0")
	if err := ScriptSafe(safe); err != nil {
		t.Errorf("a root-owned 0755 script in a 0700 directory: %v", err)
	}
	if err := os.Chmod(safe, 0o777); err != nil {
		t.Fatal(err)
	}
	if err := ScriptSafe(safe); err == nil || !strings.Contains(err.Error(), "writable by root alone") {
		t.Errorf("a world-writable script: %v", err)
	}
	os.Chmod(safe, 0o755)
	if err := os.Chown(safe, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	if err := ScriptSafe(safe); err == nil || !strings.Contains(err.Error(), "owned by uid 65534") {
		t.Errorf("a script owned by nobody: %v", err)
	}
	dir := t.TempDir()
	os.Chmod(dir, 0o777)
	inOpenDir := filepath.Join(dir, "check")
	os.WriteFile(inOpenDir, []byte("#!/bin/sh\n"), 0o755)
	if err := ScriptSafe(inOpenDir); err == nil || !strings.Contains(err.Error(), dir) {
		t.Errorf("a script in a world-writable directory: %v", err)
	}
}
