package event

import (
	"encoding/json"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestRingKeepsTheLast(t *testing.T) {
	b := NewBus("v1", nil)
	for range RingSize + 10 {
		b.Publish(Event{Kind: BackendUp})
	}
	all, complete := b.Since(0)
	if complete || len(all) != RingSize || all[0].Seq != 11 || all[len(all)-1].Seq != RingSize+10 {
		t.Fatalf("after %d events: %d kept from %d, complete %v; want the last %d, incomplete from 0", RingSize+10, len(all), all[0].Seq, complete, RingSize)
	}
	for i := 1; i < len(all); i++ {
		if all[i].Seq != all[i-1].Seq+1 {
			t.Fatalf("kept events out of order at %d: %d after %d", i, all[i].Seq, all[i-1].Seq)
		}
	}
	if rest, complete := b.Since(10); !complete || len(rest) != RingSize {
		t.Errorf("since 10: %d events, complete %v; want all %d kept, complete", len(rest), complete, RingSize)
	}
	if rest, complete := b.Since(RingSize + 10); !complete || len(rest) != 0 {
		t.Errorf("since the last: %d events, complete %v; want none, complete", len(rest), complete)
	}
	// An id from before a restart, beyond what this process has counted: all it keeps is news.
	if rest, complete := b.Since(RingSize + 11); complete || len(rest) != RingSize {
		t.Errorf("since an id of a previous run: %d events, complete %v; want all %d kept, incomplete", len(rest), complete, RingSize)
	}
}

// A subscriber that takes nothing loses what its buffer cannot hold, counted, and Publish
// does not wait for it.
// A restart counts from 1 again: a client's id from before it is beyond the last, and gets
// everything kept, told that it may have missed some.
func TestSinceARestart(t *testing.T) {
	b := NewBus("v1", nil)
	b.Publish(Event{Kind: BackendUp})
	if rest, complete := b.Since(500); complete || len(rest) != 1 {
		t.Errorf("since 500 of a previous run: %d events, complete %v; want the 1 kept, incomplete", len(rest), complete)
	}
}

func TestSlowSubscriberDrops(t *testing.T) {
	total := NewTotal()
	b := NewBus("v1", total)
	_, _, slow := b.Subscribe(0)
	defer slow.Close()
	const n = subscriberBuffer + 5
	for range n {
		b.Publish(Event{Kind: AllDown})
	}
	if d := slow.Dropped(); d != 5 {
		t.Errorf("dropped %d, want 5", d)
	}
	if got := testutil.ToFloat64(total.WithLabelValues("all_down")); got != n {
		t.Errorf("events_total{kind=all_down} = %v, want %d", got, n)
	}
}

// Subscribe's backlog and its feed meet without a gap or a repeat.
func TestSubscribeBacklogThenLive(t *testing.T) {
	b := NewBus("v1", nil)
	b.Publish(Event{Kind: BackendDown})
	b.Publish(Event{Kind: BackendUp})
	backlog, complete, s := b.Subscribe(1)
	defer s.Close()
	b.Publish(Event{Kind: AllDown})
	if !complete || len(backlog) != 1 || backlog[0].Seq != 2 {
		t.Fatalf("backlog since 1: %v (complete %v), want event 2", backlog, complete)
	}
	if e := <-s.Events(); e.Seq != 3 || e.Kind != AllDown {
		t.Errorf("live after the backlog: %+v, want all_down 3", e)
	}
}

// The JSON is the documented schema: a kind's unused fields are left out.
func TestJSON(t *testing.T) {
	b := NewBus("1.2.3", nil)
	_, _, s := b.Subscribe(0)
	defer s.Close()
	b.Publish(Event{Kind: GroupSwitched, Zone: "app.lan.", Server: "dns://:53", Family: "ipv4", From: Group(200), To: Group(0), Why: "preempt"})
	var got map[string]any
	if err := json.Unmarshal((<-s.Events()).JSON(), &got); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"version", "seq", "kind", "time", "server", "zone", "instance", "family", "from", "to", "why"} {
		if _, ok := got[k]; !ok {
			t.Errorf("JSON %v lacks %q", got, k)
		}
	}
	for _, k := range []string{"backend", "check", "error", "source"} {
		if _, ok := got[k]; ok {
			t.Errorf("JSON %v has %q, which group_switched does not use", got, k)
		}
	}
	if got["to"] != 0.0 {
		t.Errorf("to = %v, want 0 (none) kept", got["to"])
	}
}
