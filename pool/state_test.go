package pool

import (
	"context"
	"encoding/json"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/healthdns/healthdns/balance"
	"github.com/healthdns/healthdns/health"
	"github.com/healthdns/healthdns/test/testkit"
)

// statePool is groupPool's primary (200) and standby (100) under nopreempt, with a state file.
func statePool(path string, sw *testkit.Switchboard) *Pool {
	cfg := testConfig("ha.lan.", "10.0.0.1", "10.0.0.2")
	cfg.Backends[0].Priority = 200
	cfg.Spec.Interval, cfg.Spec.Timeout, cfg.Spec.Rise, cfg.Spec.Fall = 20*time.Millisecond, 10*time.Millisecond, 2, 2
	cfg.Preempt = balance.Preemption{Never: true}
	cfg.State = State{Path: path, MaxAge: time.Hour}
	return newTestPool(cfg, sw.Probe)
}

// restart forgets what the process knew of the state file at path, as a new process would:
// the next pool reads it from the disk.
func restart(path string) {
	stateFiles.Lock()
	delete(stateFiles.byPath, path)
	stateFiles.Unlock()
}

// savedZone reads the zone's entry from the file at path, as the disk has it now.
func savedZone(t *testing.T, path string) (zoneState, bool) {
	t.Helper()
	doc, err := readStateFile(path)
	if err != nil {
		return zoneState{}, false
	}
	z, ok := doc.Zones[Owner("", "ha.lan.")]
	return z, ok
}

func waitSaved(t *testing.T, path, what string, saved func(zoneState) bool) {
	t.Helper()
	waitFor(t, what, func() bool { z, ok := savedZone(t, path); return ok && saved(z) })
}

// TestStateResumesNopreempt: a standby that took over under nopreempt keeps serving across a
// reload and a restart, with the primary healthy again; the state file says so throughout.
func TestStateResumesNopreempt(t *testing.T) {
	lines := testkit.LogLines(t)
	path := filepath.Join(t.TempDir(), "state.json")
	sw := testkit.NewSwitchboard()
	p := statePool(path, sw)
	startPool(t, p)
	waitServing(t, p, "10.0.0.1", "at start")
	waitSaved(t, path, "the primary saved as serving", func(z zoneState) bool { return z.Serving["ipv4"] == 200 })
	sw.Set("10.0.0.1", true)
	waitServing(t, p, "10.0.0.2", "primary dead")
	sw.Set("10.0.0.1", false)
	waitFor(t, "the primary healthy again", func() bool { return p.Snapshot().V4.NUp == 2 })
	waitSaved(t, path, "the standby saved as serving, both up", func(z zoneState) bool {
		return z.Serving["ipv4"] == 100 && z.Health[netip.MustParseAddr("10.0.0.1")] == "up"
	})

	// A reload: the new pool carries the serving group over, and saves the same.
	next := New(p.cfg, p.reg, p.metrics)
	startPool(t, next)
	p.Stop()
	waitServing(t, next, "10.0.0.2", "after a reload")
	next.rebuild()
	if z, _ := savedZone(t, path); z.Serving["ipv4"] != 100 {
		t.Fatalf("after a reload the state file says group %d serves, want 100", z.Serving["ipv4"])
	}
	next.Stop()

	// A restart: a new process, its own registry, the primary healthy from its first probe.
	restart(path)
	again := statePool(path, sw)
	startPool(t, again)
	if got := serving(again); !slices.Equal(got, []string{"10.0.0.2"}) {
		t.Fatalf("after a restart: serving %v, want the standby it served before (nopreempt)", got)
	}
	if !slices.ContainsFunc(lines(), func(l string) bool {
		return strings.Contains(l, "zone ha.lan.: resuming from state file "+path) && strings.Contains(l, "ipv4 priority group 100 (nopreempt)")
	}) {
		t.Errorf("no line says the state was resumed:\n%s", strings.Join(lines(), "\n"))
	}
	// The standby failing moves to the primary, as it would have without the restart.
	sw.Set("10.0.0.2", true)
	waitServing(t, again, "10.0.0.1", "the standby dead after the restart")
}

// TestStateResumedGroupDown: a saved group with no healthy backend at the restart is not
// resumed: the failover's own choice serves, and the log says why.
func TestStateResumedGroupDown(t *testing.T) {
	lines := testkit.LogLines(t)
	path := filepath.Join(t.TempDir(), "state.json")
	sw := testkit.NewSwitchboard()
	p := statePool(path, sw)
	startPool(t, p)
	sw.Set("10.0.0.1", true)
	waitServing(t, p, "10.0.0.2", "primary dead")
	sw.Set("10.0.0.1", false)
	waitSaved(t, path, "the standby saved as serving", func(z zoneState) bool { return z.Serving["ipv4"] == 100 })
	p.Stop()

	restart(path)
	sw.Set("10.0.0.2", true)
	again := statePool(path, sw)
	startPool(t, again)
	waitServing(t, again, "10.0.0.1", "the saved standby dead at the restart")
	if !slices.ContainsFunc(lines(), func(l string) bool {
		return strings.Contains(l, "priority group 100, which the state file") && strings.Contains(l, "has no healthy backend; serving group 200")
	}) {
		t.Errorf("no line says the saved group could not be resumed:\n%s", strings.Join(lines(), "\n"))
	}
}

// TestStateResumesDrains: a drain set through the status API survives a restart, with its
// reason, its end and who set it; one that ended meanwhile does not come back.
func TestStateResumesDrains(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.json")
	sw := testkit.NewSwitchboard()
	cfg := testConfig("ha.lan.", "10.0.0.1", "10.0.0.2", "10.0.0.3")
	cfg.State = State{Path: path, MaxAge: time.Hour}
	p := newTestPool(cfg, sw.Probe)
	startPool(t, p)
	until := time.Now().Add(time.Hour).UTC().Truncate(time.Second)
	if err := p.Drain(netip.MustParseAddr("10.0.0.1"), Drain{Reason: "kernel upgrade", Until: until}, "192.0.2.1:4242"); err != nil {
		t.Fatal(err)
	}
	if err := p.Drain(netip.MustParseAddr("10.0.0.2"), Drain{Until: time.Now().Add(300 * time.Millisecond)}, "192.0.2.1:4242"); err != nil {
		t.Fatal(err)
	}
	waitSaved(t, path, "both drains saved", func(z zoneState) bool { return len(z.Drains) == 2 })
	p.Stop()
	time.Sleep(400 * time.Millisecond) // the second drain's end passes while the server is down

	restart(path)
	again := newTestPool(cfg, sw.Probe)
	startPool(t, again)
	if got := serving(again); !slices.Equal(got, []string{"10.0.0.2", "10.0.0.3"}) {
		t.Fatalf("after a restart: serving %v, want 10.0.0.2 and 10.0.0.3 (10.0.0.1 still drained)", got)
	}
	st := again.Status().Backends[0]
	if st.DrainedBy != "api" || st.Drained.Reason != "kernel upgrade" || !st.Drained.Until.Equal(until) {
		t.Errorf("status of 10.0.0.1 after the restart: drained by %q, reason %q, until %v; want api, kernel upgrade, %v",
			st.DrainedBy, st.Drained.Reason, st.Drained.Until, until)
	}
}

// TestStateIgnored: a state file that is corrupt, of another configuration, or older than its
// max age is ignored with a log line, and the pool starts as without one: on the primary.
func TestStateIgnored(t *testing.T) {
	for _, tc := range []struct {
		name, line string
		spoil      func(t *testing.T, path string)
	}{
		{"corrupt", "ignored, starting without it: not a state file (corrupt or truncated?)", func(t *testing.T, path string) {
			b, _ := os.ReadFile(path)
			if err := os.WriteFile(path, b[:len(b)/2], 0o644); err != nil {
				t.Fatal(err)
			}
		}},
		{"another configuration", "ignored, starting afresh: it was saved for another configuration of the zone", func(t *testing.T, path string) {
			editSaved(t, path, func(z *zoneState) { z.Fingerprint = "0123456789abcdef" })
		}},
		{"too old", "ignored, starting afresh: saved 2h0m0s ago, more than its max age 1h0m0s", func(t *testing.T, path string) {
			editSaved(t, path, func(z *zoneState) { z.Saved = z.Saved.Add(-2 * time.Hour) })
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			lines := testkit.LogLines(t)
			path := filepath.Join(t.TempDir(), "state.json")
			sw := testkit.NewSwitchboard()
			p := statePool(path, sw)
			startPool(t, p)
			sw.Set("10.0.0.1", true)
			waitServing(t, p, "10.0.0.2", "primary dead")
			sw.Set("10.0.0.1", false)
			waitSaved(t, path, "the standby saved as serving", func(z zoneState) bool { return z.Serving["ipv4"] == 100 })
			p.Stop()

			tc.spoil(t, path)
			restart(path)
			again := statePool(path, sw)
			startPool(t, again)
			if got := serving(again); !slices.Equal(got, []string{"10.0.0.1"}) {
				t.Errorf("serving %v, want the primary: a fresh start", got)
			}
			if !slices.ContainsFunc(lines(), func(l string) bool { return strings.Contains(l, tc.line) && strings.Contains(l, path) }) {
				t.Errorf("no line %q:\n%s", tc.line, strings.Join(lines(), "\n"))
			}
			// And the file is written anew, of this configuration.
			waitSaved(t, path, "the state saved again", func(z zoneState) bool { return z.Fingerprint == again.fingerprint && z.Serving["ipv4"] == 200 })
		})
	}
}

// editSaved rewrites the zone's entry of the state file at path.
func editSaved(t *testing.T, path string, edit func(*zoneState)) {
	t.Helper()
	doc, err := readStateFile(path)
	if err != nil {
		t.Fatal(err)
	}
	z := doc.Zones[Owner("", "ha.lan.")]
	edit(&z)
	doc.Zones[Owner("", "ha.lan.")] = z
	b, _ := json.Marshal(doc)
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestStateLastKnownHealth: until a backend's first verdict, its last known health answers;
// once the verdict comes, it alone does.
func TestStateLastKnownHealth(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.json")
	sw := testkit.NewSwitchboard()
	cfg := testConfig("lk.lan.", "10.0.0.1", "10.0.0.2")
	cfg.Spec.Timeout, cfg.Spec.Rise, cfg.Spec.Fall = 100*time.Millisecond, 1, 1
	cfg.State = State{Path: path, MaxAge: time.Hour}
	sw.Set("10.0.0.2", true)
	p := newTestPool(cfg, sw.Probe)
	startPool(t, p)
	waitFor(t, "the health saved", func() bool {
		doc, err := readStateFile(path)
		z := doc.Zones[Owner("", "lk.lan.")]
		return err == nil && z.Health[netip.MustParseAddr("10.0.0.1")] == "up" && z.Health[netip.MustParseAddr("10.0.0.2")] == "down"
	})
	p.Stop()

	restart(path)
	// The first probes hang until released: nothing but the state says who is up.
	release := make(chan struct{})
	probe := func(ctx context.Context, a netip.Addr) error {
		select {
		case <-release:
		case <-ctx.Done():
			return ctx.Err()
		}
		if a == netip.MustParseAddr("10.0.0.1") {
			return errors.New("connection refused") // the last known up backend is down now
		}
		return nil
	}
	cfg.Spec.Timeout = time.Hour // the probe returns when released, not before
	m := NewMetrics()
	again := New(cfg, health.NewRegistry(seriesKeeper{m}, health.WithProbe(probe)), m)
	again.Start()
	t.Cleanup(again.Stop)
	if got := serving(again); !slices.Equal(got, []string{"10.0.0.1"}) {
		t.Fatalf("before the first verdicts: serving %v, want 10.0.0.1, last known up", got)
	}
	close(release)
	waitServing(t, again, "10.0.0.2", "the first verdicts in")
}

// TestStateSaveFails: a state file that cannot be written (its directory is gone) is logged
// once, with the error, and the pool serves on; once a write succeeds again, that is logged too.
func TestStateSaveFails(t *testing.T) {
	lines := testkit.LogLines(t)
	dir := filepath.Join(t.TempDir(), "state")
	path := filepath.Join(dir, "state.json")
	sw := testkit.NewSwitchboard()
	p := statePool(path, sw) // the directory is missing from the start
	startPool(t, p)
	logged := func(text string) func() bool {
		return func() bool {
			return slices.ContainsFunc(lines(), func(l string) bool { return strings.Contains(l, text) })
		}
	}
	waitFor(t, "the failed save logged", logged("state file "+path+": not saved: creating a temporary file in "+dir+": no such file or directory"))
	sw.Set("10.0.0.1", true)
	waitServing(t, p, "10.0.0.2", "primary dead, with the state file unwritable")
	p.rebuild()
	if n := len(slices.DeleteFunc(lines(), func(l string) bool { return !strings.Contains(l, "not saved") })); n != 1 {
		t.Errorf("the failed save was logged %d times, want once", n)
	}
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	sw.Set("10.0.0.1", false)
	waitFor(t, "the save logged again", logged("state file "+path+": saved again"))
	waitSaved(t, path, "the standby saved", func(z zoneState) bool { return z.Serving["ipv4"] == 100 })
}

// TestStateSavedAgain: a state unchanged is saved again every tenth of its max age, so that its
// age at a restart is how long the server has been down, not how long it ran unchanged.
func TestStateSavedAgain(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.json")
	sw := testkit.NewSwitchboard()
	p := statePool(path, sw)
	p.cfg.State.MaxAge = 2 * time.Second
	startPool(t, p)
	var first time.Time
	waitSaved(t, path, "the first save", func(z zoneState) bool { first = z.Saved; return true })
	waitSaved(t, path, "a later save of the same state", func(z zoneState) bool {
		return z.Saved.After(first) && z.Serving["ipv4"] == 200
	})
}
