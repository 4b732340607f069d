package health

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/healthdns/healthdns/health/internal/engine"
	"github.com/healthdns/healthdns/health/internal/rawsock"
)

func TestRegistrySharesAndCounts(t *testing.T) {
	obs := &recorder{}
	p := &switchProber{}
	reg := NewRegistry(obs, WithProbe(p.probe))
	addr := netip.MustParseAddr("127.0.0.1")
	t1 := Target{Addr: addr, Spec: testSpec}
	a := reg.Acquire(t1, "a.lan.")
	b := reg.Acquire(t1, "b.lan.")
	if a.Monitor != b.Monitor || reg.Len() != 1 {
		t.Fatalf("same target gave two monitors (len %d)", reg.Len())
	}
	other := testSpec
	other.Check.Port = 81
	c := reg.Acquire(Target{Addr: addr, Spec: other}, "a.lan.")
	if c.Monitor == a.Monitor || reg.Len() != 2 {
		t.Fatal("a different check shared a monitor")
	}

	a.Release()
	a.Release() // twice is harmless
	if reg.Len() != 2 {
		t.Fatalf("len %d after one of two leases went", reg.Len())
	}
	if _, rel, stop := obs.count(); rel != 0 || stop != 0 {
		t.Fatalf("released %d stopped %d while a.lan. still holds the address", rel, stop)
	}
	c.Release()
	if _, rel, stop := obs.count(); rel != 1 || stop != 1 {
		t.Fatalf("released %d stopped %d, want a.lan. released and tcp :81 stopped", rel, stop)
	}
	b.Release()
	if reg.Len() != 0 {
		t.Fatalf("len %d after every lease went", reg.Len())
	}
}

func TestRegistryAdoptsStateAcrossOverlap(t *testing.T) {
	p := &switchProber{}
	reg := NewRegistry(&recorder{}, WithProbe(p.probe))
	target := Target{Addr: netip.MustParseAddr("127.0.0.1"), Spec: testSpec}
	old := reg.Acquire(target, "a.lan.")
	<-old.Checked()
	p.fail.Store(true)
	eventually(t, "down", func() bool { return !old.Up() })

	// A reload: the new instance acquires before the old one releases.
	reg.OpenGeneration()
	adopted := reg.Acquire(target, "a.lan.")
	if !adopted.IsChecked() || adopted.Up() {
		t.Fatal("the new lease did not adopt the running loop's state")
	}
	old.Release()
	reg.CommitGeneration()
	if reg.Len() != 1 {
		t.Fatalf("len %d after the overlap", reg.Len())
	}
	adopted.Release()
}

func TestRegistryAbortGenerationStopsWhatStarted(t *testing.T) {
	p := &switchProber{}
	reg := NewRegistry(&recorder{}, WithProbe(p.probe))
	kept := reg.Acquire(Target{Addr: netip.MustParseAddr("127.0.0.1"), Spec: testSpec}, "a.lan.")
	reg.Started(func() { t.Error("stop recorded outside a generation was called") })

	reg.OpenGeneration()
	reg.OpenGeneration() // idempotent
	var order []string
	for _, name := range []string{"first", "second"} {
		adopted := reg.Acquire(Target{Addr: netip.MustParseAddr("127.0.0.1"), Spec: testSpec}, "a.lan.")
		added := reg.Acquire(Target{Addr: netip.MustParseAddr("127.0.0.2"), Spec: testSpec}, "a.lan.")
		reg.Started(func() {
			order = append(order, name)
			adopted.Release()
			added.Release()
		})
	}
	reg.AbortGeneration()
	reg.AbortGeneration()

	if strings.Join(order, ",") != "second,first" {
		t.Fatalf("stopped %v, want each once, newest first", order)
	}
	if reg.Len() != 1 {
		t.Fatalf("len %d after abort, want only the kept target", reg.Len())
	}
	if !reg.Holds("a.lan.") || reg.Holds("b.lan.") {
		t.Fatal("Holds does not follow the kept lease")
	}

	// A committed generation is its owner's to stop.
	reg.OpenGeneration()
	reg.Started(func() { t.Error("a committed generation was stopped") })
	reg.CommitGeneration()
	reg.AbortGeneration()

	if !kept.IsChecked() {
		<-kept.Checked()
	}
	kept.Release()
	if reg.Len() != 0 || reg.Holds("a.lan.") {
		t.Fatalf("len %d at the end", reg.Len())
	}
}

// Every check of a kind shares one loop per registry, whatever its port or timing: one raw
// socket per family for every ping, one loop for every TCP check.
func TestRegistryOneLoopPerWire(t *testing.T) {
	loopOf := func(reg *Registry, c Check) engine.Scheduler {
		t.Helper()
		l := reg.Acquire(Target{Addr: netip.MustParseAddr("127.0.0.1"), Spec: Spec{Check: c, Interval: time.Hour, Timeout: time.Second, Rise: 1, Fall: 1}}, "z.")
		defer l.Release()
		return l.loop
	}
	reg := NewRegistry(&recorder{})
	reg.icmpDecided, reg.icmpPrivileged = true, true
	icmp := loopOf(reg, Check{Kind: ICMP})
	if icmp != reg.echo && rawsock.BatchedICMP {
		t.Errorf("a privileged ping runs on %T, want the echo loop", icmp)
	}
	tcp80, tcp81 := loopOf(reg, Check{Kind: TCP, Port: 80}), loopOf(reg, Check{Kind: TCP, Port: 81})
	if tcp80 != tcp81 || tcp80 == icmp {
		t.Errorf("TCP checks on two ports run on %p and %p (pings on %p): want one loop of their own", tcp80, tcp81, icmp)
	}
	other := NewRegistry(&recorder{})
	other.icmpDecided, other.icmpPrivileged = true, true
	if loopOf(other, Check{Kind: ICMP}) == icmp {
		t.Error("two registries share a loop")
	}
	unprivileged := NewRegistry(&recorder{})
	unprivileged.icmpDecided = true
	if l := loopOf(unprivileged, Check{Kind: ICMP}); l != unprivileged.blocking {
		t.Errorf("an unprivileged ping runs on %T, want the blocking loop (pro-bing)", l)
	}
}

// What a holder keeps goes to the next holder of its key, and a holder that stops takes back only
// its own: after a failed reload the running holder's state is found again.
func TestRegistryKeep(t *testing.T) {
	reg := NewRegistry(&recorder{})
	if _, ok := reg.Kept("k"); ok {
		t.Fatal("kept before anything was")
	}
	running, failed, next := new(int), new(int), new(int)
	reg.Keep("k", running)
	reg.Keep("k", failed) // a reload starts beside the running holder...
	if v, _ := reg.Kept("k"); v != failed {
		t.Fatal("Kept does not give the newest")
	}
	reg.Forget("k", failed) // ...and fails
	if v, ok := reg.Kept("k"); !ok || v != running {
		t.Fatalf("after the failed reload Kept gives %v, want the running holder's", v)
	}
	reg.Keep("k", next) // a good reload
	reg.Forget("k", running)
	if v, _ := reg.Kept("k"); v != next {
		t.Fatal("the good reload's holder lost its state when its predecessor stopped")
	}
	reg.Forget("k", next)
	if _, ok := reg.Kept("k"); ok {
		t.Fatal("kept after every holder stopped")
	}
}
