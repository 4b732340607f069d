package test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/healthdns/healthdns/client"
	"github.com/healthdns/healthdns/test/harness"
)

// ctl runs healthdnsctl with env and args, and returns its exit code and output.
type ctlRun struct {
	code           int
	stdout, stderr string
}

func ctl(t *testing.T, env []string, args ...string) ctlRun {
	t.Helper()
	bin := harness.Healthdnsctl(t)
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	r := ctlRun{stdout: stdout.String(), stderr: stderr.String()}
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
	case err != nil:
		t.Fatalf("healthdnsctl %v: %v", args, err)
	}
	return r
}

// TestHealthdnsctl runs every command of healthdnsctl against the real binary: the reads as a
// table and as JSON, the writes of backends, drains and fail-back, the event stream, the
// Corefile check, and each exit code.
func TestHealthdnsctl(t *testing.T) {
	harness.RequireEtcd(t)
	t.Parallel()
	const fixed, first, added = "127.0.15.10", "127.0.15.11", "127.0.15.12"
	f := startAPIFleet(t, fixed, first, added)
	f.answered(t, "the first list", fixed, first)
	env := []string{"HEALTHDNS_ADDR=" + f.status[0], "HEALTHDNS_TOKEN_FILE=" + f.tokenFile}
	want := func(r ctlRun, code int, what string) {
		t.Helper()
		if r.code != code {
			t.Fatalf("%s: exit %d, want %d\nstdout: %s\nstderr: %s", what, r.code, code, r.stdout, r.stderr)
		}
	}
	decode := func(r ctlRun, what string, v any) {
		t.Helper()
		if err := json.Unmarshal([]byte(r.stdout), v); err != nil {
			t.Fatalf("%s: not JSON: %v\n%s", what, err, r.stdout)
		}
	}

	// Reads.
	r := ctl(t, env, "status")
	want(r, 0, "status")
	if !strings.Contains(r.stdout, "ZONE") || !strings.Contains(r.stdout, "api.lan.  "+fixed) || !strings.Contains(r.stdout, "up") {
		t.Errorf("status prints no table of api.lan.'s backends:\n%s", r.stdout)
	}
	var doc client.Document
	r = ctl(t, env, "status", "--json")
	want(r, 0, "status --json")
	decode(r, "status --json", &doc)
	if len(doc.Pools) != 1 || doc.Pools[0].Zone != "api.lan." || len(doc.Pools[0].Backends) != 2 {
		t.Errorf("status --json: %+v; want the pool api.lan. of 2 backends", doc.Pools)
	}
	var p client.Pool
	r = ctl(t, env, "--json", "status", "api.lan")
	want(r, 0, "status ZONE --json")
	decode(r, "status ZONE --json", &p)
	if p.Zone != "api.lan." {
		t.Errorf("status api.lan --json: zone %q", p.Zone)
	}

	// The event stream, followed while the writes below happen.
	bin := harness.Healthdnsctl(t)
	watch := exec.Command(bin, "watch", "--json")
	watch.Env = append(os.Environ(), env...)
	events, err := watch.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := watch.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { watch.Process.Kill(); watch.Wait() })
	drained := make(chan client.Event, 1)
	go func() {
		sc := bufio.NewScanner(events)
		for sc.Scan() {
			var e client.Event
			if json.Unmarshal(sc.Bytes(), &e) == nil && e.Kind == "backend_drained" && e.Backend == first {
				drained <- e
				return
			}
		}
	}()

	// Backends: add, change one setting keeping the others, read, remove.
	r = ctl(t, env, "backend", "set", "api.lan", added, "--weight", "4")
	want(r, 0, "backend set")
	var ba client.BackendAnswer
	decode(r, "backend set", &ba)
	if !ba.OK || ba.Weight != 4 {
		t.Errorf("backend set --weight 4: %+v", ba)
	}
	f.answered(t, "a backend added by healthdnsctl", fixed, first, added)
	r = ctl(t, nil, "--addr", f.status[1], "--token-file", f.tokenFile, "backend", "set", "api.lan", added, "--priority", "200")
	want(r, 0, "backend set --priority through server B, with flags")
	r = ctl(t, env, "backend", "get", "api.lan", added, "--json")
	want(r, 0, "backend get")
	decode(r, "backend get", &ba)
	if ba.Weight != 4 || ba.Priority != 200 || *ba.Value != "weight 4 priority 200" {
		t.Errorf("after --weight 4 then --priority 200: %+v; want both", ba)
	}
	f.answered(t, "priority 200 by healthdnsctl", added)
	r = ctl(t, env, "backend", "set", "api.lan", fixed, "--weight", "2")
	want(r, 1, "backend set of the Corefile's backend")
	if !strings.Contains(r.stderr, "read_only") || !strings.Contains(r.stderr, "backend line in the Corefile") {
		t.Errorf("backend set of the Corefile's backend says %q; want read_only and where it is listed", r.stderr)
	}
	r = ctl(t, env, "backend", "rm", "api.lan", added)
	want(r, 0, "backend rm")
	f.answered(t, "a backend removed by healthdnsctl", fixed, first)

	// Drains and fail-back.
	r = ctl(t, env, "drain", "api.lan", first, "--reason", "kernel upgrade", "--until", "1h")
	want(r, 0, "drain")
	var wa client.WriteAnswer
	decode(r, "drain", &wa)
	if !wa.OK || wa.State != "drained" || wa.Reason != "kernel upgrade" || wa.Until == nil || time.Until(*wa.Until) < 50*time.Minute {
		t.Errorf("drain answered %+v; want drained for an hour for kernel upgrade", wa)
	}
	select {
	case e := <-drained:
		if e.Reason != "kernel upgrade" {
			t.Errorf("watch: %+v; want the drain's reason", e)
		}
	case <-time.After(15 * time.Second):
		t.Error("watch printed no backend_drained event for the drain")
	}
	r = ctl(t, env, "undrain", "api.lan", first)
	want(r, 0, "undrain")
	r = ctl(t, env, "failback", "api.lan")
	want(r, 1, "failback of a zone of one group")
	if !strings.Contains(r.stderr, "409 conflict") {
		t.Errorf("failback refused with %q; want the code conflict", r.stderr)
	}
	// report: refused here (the zone has no push check), with the server's code.
	r = ctl(t, env, "report", "api.lan", first, "pass", "--output", "replication ok")
	want(r, 1, "report for a zone without a push check")

	// The Corefile check, with the coredns the tests run.
	dir := t.TempDir()
	good, bad := filepath.Join(dir, "good"), filepath.Join(dir, "bad")
	os.WriteFile(good, []byte(".:1053 {\n healthdns ok.lan {\n  backend "+fixed+" weight 2\n  policy weighted\n }\n}\n"), 0o644)
	os.WriteFile(bad, []byte(".:1053 {\n healthdns ok.lan {\n  backend "+fixed+" weight heavy\n }\n}\n"), 0o644)
	r = ctl(t, nil, "check", good, "--coredns", harness.Binary(t))
	want(r, 0, "check of a good Corefile")
	if !strings.Contains(r.stdout, "zone ok.lan.") || !strings.Contains(r.stdout, "backend "+fixed+" weight 2") {
		t.Errorf("check prints %q; want the pool and its backend", r.stdout)
	}
	r = ctl(t, nil, "check", bad, "--coredns", harness.Binary(t))
	want(r, 1, "check of a bad Corefile")
	if !strings.Contains(r.stderr, bad+":3 - Error during parsing: invalid weight 'heavy'") {
		t.Errorf("check of a bad Corefile says %q; want the file, line and error", r.stderr)
	}
	want(ctl(t, nil, "check", bad, "--coredns", filepath.Join(dir, "none")), 4, "check without coredns")

	// Exit codes of the rest.
	want(ctl(t, env, "drain", "api.lan"), 2, "drain without an address")
	want(ctl(t, env, "reboot"), 2, "an unknown command")
	want(ctl(t, env, "backend", "set", "api.lan", added, "--priority", "300"), 2, "a priority out of range")
	want(ctl(t, append(env, "HEALTHDNS_ADDR=127.0.0.1:1"), "status"), 3, "a listener that is not there")
	wrong := filepath.Join(dir, "wrong")
	os.WriteFile(wrong, []byte("wrong-token-0123456789\n"), 0o600)
	r = ctl(t, nil, "--addr", f.status[0], "--token-file", wrong, "status")
	want(r, 1, "a wrong token")
	if !strings.Contains(r.stderr, "unauthorized") {
		t.Errorf("a wrong token says %q; want unauthorized", r.stderr)
	}
}
