package pool

import (
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/healthdns/healthdns/balance"
	"github.com/healthdns/healthdns/event"
	"github.com/healthdns/healthdns/test/testkit"
)

// nextEvent returns the next event of sub that match accepts, failing after 5s; events it
// skips are the ones the test does not look at.
func nextEvent(t *testing.T, sub *event.Subscription, what string, match func(event.Event) bool) event.Event {
	t.Helper()
	timeout := time.After(5 * time.Second)
	for {
		select {
		case e := <-sub.Events():
			if match(e) {
				return e
			}
		case <-timeout:
			t.Fatalf("no %s event within 5s", what)
		}
	}
}

func kindIs(k event.Kind, backend string) func(event.Event) bool {
	return func(e event.Event) bool { return e.Kind == k && e.Backend == backend }
}

// eventPool runs groupPool's primary and standby with a bus, subscribed from its start.
func eventPool(t *testing.T, pre balance.Preemption) (*Pool, *testkit.Switchboard, *event.Subscription, *event.Bus) {
	t.Helper()
	bus := event.NewBus("test", nil)
	_, _, sub := bus.Subscribe(0)
	t.Cleanup(sub.Close)
	sw := testkit.NewSwitchboard()
	cfg := testConfig("ev.lan.", "10.0.0.1", "10.0.0.2")
	cfg.Server = "dns://:53"
	cfg.Backends[0].Priority = 200
	cfg.Spec.Interval, cfg.Spec.Timeout, cfg.Spec.Rise, cfg.Spec.Fall = 20*time.Millisecond, 10*time.Millisecond, 2, 2
	cfg.Preempt = pre
	cfg.Events = bus
	p := newTestPool(cfg, sw.Probe)
	startPool(t, p)
	return p, sw, sub, bus
}

// TestEventsFromTransitions: each kind comes from a real cause, once, with what it says.
func TestEventsFromTransitions(t *testing.T) {
	p, sw, sub, _ := eventPool(t, balance.Preemption{})
	waitServing(t, p, "10.0.0.1", "at start")

	sw.Set("10.0.0.1", true)
	down := nextEvent(t, sub, "backend_down", kindIs(event.BackendDown, "10.0.0.1"))
	if down.Check != "tcp :80" || down.Reason == "" || !strings.Contains(down.Error, "connection refused") {
		t.Errorf("backend_down says check %q, reason %q, error %q; want tcp :80, a reason and the probe's error", down.Check, down.Reason, down.Error)
	}
	if down.Zone != "ev.lan." || down.Server != "dns://:53" || down.Version != event.Version || down.Instance.Version != "test" || down.Seq == 0 {
		t.Errorf("backend_down's envelope is %+v", down)
	}
	sw2 := nextEvent(t, sub, "group_switched", func(e event.Event) bool { return e.Kind == event.GroupSwitched })
	if sw2.Family != "ipv4" || *sw2.From != 200 || *sw2.To != 100 || sw2.Why == "" {
		t.Errorf("group_switched from %d to %d (%s, %q), want ipv4 from 200 to 100 with why", *sw2.From, *sw2.To, sw2.Family, sw2.Why)
	}

	sw.Set("10.0.0.2", true)
	nextEvent(t, sub, "all_down", func(e event.Event) bool { return e.Kind == event.AllDown })
	sw.Set("10.0.0.1", false)
	nextEvent(t, sub, "backend_up", kindIs(event.BackendUp, "10.0.0.1"))
	nextEvent(t, sub, "all_down_over", func(e event.Event) bool { return e.Kind == event.AllDownOver })

	if err := p.Drain(netip.MustParseAddr("10.0.0.1"), Drain{On: true, Reason: "kernel upgrade"}, "test"); err != nil {
		t.Fatal(err)
	}
	drained := nextEvent(t, sub, "backend_drained", kindIs(event.BackendDrained, "10.0.0.1"))
	if drained.Reason != "kernel upgrade" || drained.By != "api test" {
		t.Errorf("backend_drained: reason %q by %q, want kernel upgrade by api test (the caller)", drained.Reason, drained.By)
	}
	if err := p.Undrain(netip.MustParseAddr("10.0.0.1"), "192.0.2.7:4000"); err != nil {
		t.Fatal(err)
	}
	undrained := nextEvent(t, sub, "backend_undrained", kindIs(event.BackendUndrained, "10.0.0.1"))
	if undrained.By != "api 192.0.2.7:4000" {
		t.Errorf("backend_undrained by %q, want api 192.0.2.7:4000, who undrained it", undrained.By)
	}
}

// TestFailBackEventBy: a fail-back through the API names its caller in group_switched's by.
func TestFailBackEventBy(t *testing.T) {
	p, sw, sub, _ := eventPool(t, balance.Preemption{Never: true})
	waitServing(t, p, "10.0.0.1", "at start")
	sw.Set("10.0.0.1", true)
	nextEvent(t, sub, "the failover", func(e event.Event) bool { return e.Kind == event.GroupSwitched && *e.To == 100 })
	sw.Set("10.0.0.1", false)
	nextEvent(t, sub, "backend_up", kindIs(event.BackendUp, "10.0.0.1"))
	if _, err := p.FailBack("192.0.2.8:5000"); err != nil {
		t.Fatal(err)
	}
	back := nextEvent(t, sub, "the fail-back", func(e event.Event) bool { return e.Kind == event.GroupSwitched && *e.To == 200 })
	if back.By != "api 192.0.2.8:5000" || !strings.Contains(back.Why, "fail-back by 192.0.2.8:5000") {
		t.Errorf("fail-back's group_switched: by %q, why %q", back.By, back.Why)
	}
}

// TestEventsNotRepeatedByReload: a reload's pool adopts running monitors and the API's drains,
// which are not transitions: a subscriber catching up must not see them twice.
func TestEventsNotRepeatedByReload(t *testing.T) {
	p, sw, sub, bus := eventPool(t, balance.Preemption{})
	sw.Set("10.0.0.2", true)
	nextEvent(t, sub, "backend_down", kindIs(event.BackendDown, "10.0.0.2"))
	if err := p.Drain(netip.MustParseAddr("10.0.0.1"), Drain{On: true}, "test"); err != nil {
		t.Fatal(err)
	}
	nextEvent(t, sub, "backend_drained", kindIs(event.BackendDrained, "10.0.0.1"))
	before, _ := bus.Since(0)

	next := New(p.cfg, p.reg, p.metrics)
	startPool(t, next)
	p.Stop()
	next.rebuild()
	if after, _ := bus.Since(0); len(after) != len(before) {
		t.Errorf("a reload published %v", after[len(before):])
	}
}

// TestSourceEvents: a backends file that stops parsing fails the source once, however often
// it is read broken, and its next good load recovers it.
func TestSourceEvents(t *testing.T) {
	bus := event.NewBus("test", nil)
	_, _, sub := bus.Subscribe(0)
	t.Cleanup(sub.Close)
	path := filepath.Join(t.TempDir(), "list")
	write := func(data string) {
		next := path + ".next"
		if err := os.WriteFile(next, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(next, path); err != nil {
			t.Fatal(err)
		}
	}
	write("10.1.0.2\n")
	p := listPool(t, newGate(), Source{Kind: SourceFile, Path: path})
	p.cfg.Events = bus
	p.setSourceList(backends(t, "10.1.0.2"))
	startPool(t, p)

	write("10.1.0.x\n")
	failed := nextEvent(t, sub, "source_failed", func(e event.Event) bool { return e.Kind == event.SourceFailed })
	if failed.Source != "file" || !strings.Contains(failed.Error, "10.1.0.x") {
		t.Errorf("source_failed: source %q, error %q; want file and the bad line", failed.Source, failed.Error)
	}
	write("10.1.0.y\n")
	waitFor(t, "the second broken list", func() bool { return p.Status().Source != nil && p.Status().Source.Errors >= 2 })
	write("10.1.0.3\n")
	nextEvent(t, sub, "source_recovered", func(e event.Event) bool { return e.Kind == event.SourceRecovered })
	all, _ := bus.Since(0)
	failures := 0
	for _, e := range all {
		if e.Kind == event.SourceFailed {
			failures++
		}
	}
	if failures != 1 {
		t.Errorf("%d source_failed events for one outage, want 1", failures)
	}
	// The recovered list replaced 10.1.0.2 with 10.1.0.3; the first list, read at start, was
	// no news.
	var added, removed event.Event
	waitFor(t, "backend_added and backend_removed", func() bool {
		all, _ = bus.Since(0)
		for _, e := range all {
			switch e.Kind {
			case event.BackendAdded:
				added = e
			case event.BackendRemoved:
				removed = e
			}
		}
		return added.Seq != 0 && removed.Seq != 0
	})
	if added.Backend != "10.1.0.3" || removed.Backend != "10.1.0.2" || added.Source != "file" || removed.Source != "file" {
		t.Errorf("backend_added %s (%s), backend_removed %s (%s); want 10.1.0.3 and 10.1.0.2 from the file", added.Backend, added.Source, removed.Backend, removed.Source)
	}
	for _, e := range all {
		if e.Kind == event.BackendAdded && e.Backend == "10.1.0.2" {
			t.Errorf("the first list's backend was published as added: %+v", e)
		}
	}
}
