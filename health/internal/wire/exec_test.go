//go:build unix

package wire

import (
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/healthdns/healthdns/health/internal/engine"
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
		{"exit 0 with its output held open by a child", "sleep 3 & exit 0", nil, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := script(t, tc.body)
			err := probeWithin(Exec(ExecSpec{Path: path, Args: tc.args}), addr, answered)
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
	err := probeWithin(Exec(ExecSpec{Path: path}), netip.MustParseAddr("127.0.0.9"), 3*time.Second) // time for a loaded machine to start the script and its sleep
	if err == nil || time.Since(start) > 30*time.Second {
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

// Scripts beyond the limit wait for their turn and then pass: a probe is late because others
// ran, never failed. Its timeout counts from its start, so the wait, twice its timeout
// here, does not time it out, and the wait is counted.
func TestExecWaitsForItsTurn(t *testing.T) {
	dir := t.TempDir()
	running, release := filepath.Join(dir, "running"), filepath.Join(dir, "release")
	holder := script(t, "touch "+running+"; while [ ! -e "+release+" ]; do sleep 0.05; done")
	quick := script(t, "exit 0")

	l := engine.New[BlockingState](NewBlocking())
	l.Retain()
	t.Cleanup(l.Release)
	turns := engine.NewTurns(1)
	schedule := func(path string, timeout time.Duration, results chan<- engine.Result) engine.Ticket {
		return l.Schedule(engine.Target{
			Addr: netip.MustParseAddr("127.0.0.9"), Interval: time.Hour, Timeout: timeout,
			Budget: engine.NewBudget(), Turns: turns, Name: "exec " + path,
			Run:    Exec(ExecSpec{Path: path}),
			Report: func(r engine.Result) { results <- r },
		})
	}
	holderDone, quickDone := make(chan engine.Result, 1), make(chan engine.Result, 1)
	defer schedule(holder, time.Minute, holderDone).Unschedule()
	waitFor(t, "the first script to run", func() bool { _, err := os.Stat(running); return err == nil })

	// A second, for a busy machine to start a shell once the script has its turn.
	const timeout = time.Second
	defer schedule(quick, timeout, quickDone).Unschedule()
	waitFor(t, "the second script to wait", func() bool { return turns.Stats().Waiting == 1 })
	held := 2 * timeout
	time.Sleep(held) // past the waiting probe's timeout, counted from when it was due
	select {
	case r := <-quickDone:
		t.Fatalf("a result while another script held the only turn: %+v", r)
	default:
	}
	if err := os.WriteFile(release, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	var quickResult engine.Result
	for _, done := range []chan engine.Result{holderDone, quickDone} {
		select {
		case quickResult = <-done:
			if quickResult.Err != nil {
				t.Errorf("error %v, want both scripts to pass", quickResult.Err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("no result 10s after the first script was let go")
		}
	}
	if quickResult.Late < held {
		t.Errorf("the waiting script's lateness %v, want its wait of at least %v", quickResult.Late, held)
	}
	waitFor(t, "the turns given back", func() bool { return turns.Stats().Running == 0 }) // just after the result
	if st := turns.Stats(); st.Waits != 1 || st.Waited < held || st.Waiting != 0 {
		t.Errorf("turns %+v, want one wait of at least %v and nothing waiting", st, held)
	}
}

// waitFor polls cond until it holds, for at most 10 seconds.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("10s without %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// A script that overruns its timeout after its turn came is killed and fails as one that did
// not finish: the timeout holds, counted from the start.
func TestExecTimeoutAfterItsTurn(t *testing.T) {
	l := engine.New[BlockingState](NewBlocking())
	l.Retain()
	t.Cleanup(l.Release)
	path := script(t, "sleep 30")
	results := make(chan engine.Result, 1)
	ticket := l.Schedule(engine.Target{
		Addr: netip.MustParseAddr("127.0.0.9"), Interval: time.Hour, Timeout: 200 * time.Millisecond,
		Budget: engine.NewBudget(), Turns: engine.NewTurns(1), Name: "exec " + path,
		Run:    Exec(ExecSpec{Path: path}),
		Report: func(r engine.Result) { results <- r },
	})
	defer ticket.Unschedule()
	select {
	case r := <-results:
		want := "exec " + path + ": did not finish within 200ms: killed"
		if r.Err == nil || r.Err.Error() != want {
			t.Errorf("error %v, want %s", r.Err, want)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no result 10s after the start of a script with a timeout of 200ms")
	}
}

func TestExecCannotStart(t *testing.T) {
	err := probeWithin(Exec(ExecSpec{Path: "/nonexistent/check"}), netip.MustParseAddr("127.0.0.9"), answered)
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
