package main

import (
	"bytes"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/healthdns/healthdns/test/harness"
	"github.com/healthdns/healthdns/test/netlab"
)

// The command end to end at 50 backends, one change per run, against the real binary and a real
// etcd: the file with every backend down, etcd with every backend up (a run of each source in
// each state would double the time and cover no more of the command). Its ports come from harness.TakePort, so its backend addresses
// (127.10.0.1-.50, 127.9.0-3.1) need no place in test/main_test.go's plan.
func TestSmoke(t *testing.T) {
	harness.RequireEtcd(t)
	e := harness.StartEtcd(t)
	binary, err := netlab.BuildCoreDNS(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	o := options{
		backends: 50, changes: 1, interval: time.Second, timeout: 500 * time.Millisecond,
		window: time.Second, settle: 500 * time.Millisecond,
		etcd: e.Endpoint(), binary: binary,
	}
	var results []result
	for _, run := range []struct{ source, state string }{{"file", "down"}, {"etcd", "up"}} {
		o.sources, o.states = []string{run.source}, []string{run.state}
		rs, err := measureAll(o, &out)
		if err != nil {
			t.Fatalf("%v\noutput:\n%s", err, out.String())
		}
		results = append(results, rs...)
	}
	printTables(&out, results)
	t.Log(out.String())
	for _, r := range results {
		if r.startFirstProbes != 50 {
			t.Errorf("%s, %s: %d first probes at start, want 50", r.source, r.state, r.startFirstProbes)
		}
		// One new probe target per add, whose two series (success, failure) appear and go with it.
		if !slices.Equal(r.add.firstProbes, []int{1}) || !slices.Equal(r.add.created, []int{2}) || !slices.Equal(r.add.reset, []int{0}) {
			t.Errorf("%s, %s: add made %v first probes, created %v series, reset %v; want 1, 2, 0", r.source, r.state, r.add.firstProbes, r.add.created, r.add.reset)
		}
		if !slices.Equal(r.remove.firstProbes, []int{0}) || !slices.Equal(r.remove.deleted, []int{2}) || !slices.Equal(r.remove.reset, []int{0}) {
			t.Errorf("%s, %s: remove made %v first probes, deleted %v series, reset %v; want 0, 2, 0", r.source, r.state, r.remove.firstProbes, r.remove.deleted, r.remove.reset)
		}
	}
	if !strings.Contains(out.String(), "| file | down | add |") {
		t.Errorf("no table row for file, down, add:\n%s", out.String())
	}
}

// A line is timed when its newline arrives, whatever the writes it came in.
func TestLineLog(t *testing.T) {
	var l lineLog
	l.Write([]byte("[INFO] one (first probe"))
	if l.len() != 0 {
		t.Fatal("a line without its newline was taken")
	}
	l.Write([]byte(", tcp)\n[INFO] backends: added 1 (127.9.0.1); 51 in all\n[WARN"))
	at, ok := l.find(0, "added 1 (127.9.0.1)")
	if l.len() != 2 || !ok || at.IsZero() {
		t.Fatalf("%d lines, found %v", l.len(), ok)
	}
	if n := l.count(0, "(first probe"); n != 1 {
		t.Errorf("count = %d, want 1", n)
	}
	if n := l.count(1, "(first probe"); n != 0 {
		t.Errorf("count from the second line = %d, want 0", n)
	}
	if got := l.tail(1); got != "[INFO] backends: added 1 (127.9.0.1); 51 in all\n[WARN" {
		t.Errorf("tail = %q", got)
	}
}
