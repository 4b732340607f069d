package pool

import (
	"testing"
	"time"

	"github.com/healthdns/healthdns/balance"
	"github.com/healthdns/healthdns/test/testkit"
)

// groupPool runs a pool of a primary (priority 200) and a standby (100) probed every 20ms.
func groupPool(t *testing.T, pre balance.Preemption) (*Pool, *testkit.Switchboard) {
	t.Helper()
	sw := testkit.NewSwitchboard()
	cfg := testConfig("ha.lan.", "10.0.0.1", "10.0.0.2")
	cfg.Backends[0].Priority = 200
	cfg.Spec.Interval, cfg.Spec.Timeout, cfg.Spec.Rise, cfg.Spec.Fall = 20*time.Millisecond, 10*time.Millisecond, 2, 2
	cfg.Preempt = pre
	p := newTestPool(cfg, sw.Probe)
	startPool(t, p)

	return p, sw
}

// serving returns the addresses the pool answers A with now.
func serving(p *Pool) []string {
	var out []string
	for _, a := range p.Snapshot().V4.Set.Addrs {
		out = append(out, a.String())
	}
	return out
}

func waitServing(t *testing.T, p *Pool, want string, what string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		got := serving(p)
		if len(got) == 1 && got[0] == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: serving %v, want only %s", what, got, want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestPoolPriorityGroups: answers come from the highest group with a healthy backend; how the
// primary takes back when it returns follows the pool's preemption. The state machine's own
// cases are balance's TestFailover; this checks the pool acts on them, timer included.
func TestPoolPriorityGroups(t *testing.T) {
	t.Run("preempt", func(t *testing.T) {
		p, sw := groupPool(t, balance.Preemption{})
		waitServing(t, p, "10.0.0.1", "at start")
		sw.Set("10.0.0.1", true)
		waitServing(t, p, "10.0.0.2", "primary dead")
		sw.Set("10.0.0.1", false)
		waitServing(t, p, "10.0.0.1", "primary back")
	})
	t.Run("preempt_delay", func(t *testing.T) {
		const delay = 300 * time.Millisecond
		p, sw := groupPool(t, balance.Preemption{Delay: delay})
		waitServing(t, p, "10.0.0.1", "at start")
		sw.Set("10.0.0.1", true)
		waitServing(t, p, "10.0.0.2", "primary dead")
		back := time.Now()
		sw.Set("10.0.0.1", false)
		waitServing(t, p, "10.0.0.1", "primary back after the delay")
		if took := time.Since(back); took < delay {
			t.Errorf("the primary took back %v after it returned, before its preempt_delay %v", took, delay)
		}
	})
	t.Run("nopreempt", func(t *testing.T) {
		p, sw := groupPool(t, balance.Preemption{Never: true})
		waitServing(t, p, "10.0.0.1", "at start")
		sw.Set("10.0.0.1", true)
		waitServing(t, p, "10.0.0.2", "primary dead")
		sw.Set("10.0.0.1", false)
		// The primary is healthy again (rise 2 at 20ms): the standby keeps serving.
		deadline := time.Now().Add(300 * time.Millisecond)
		for time.Now().Before(deadline) {
			if got := serving(p); len(got) != 1 || got[0] != "10.0.0.2" {
				t.Fatalf("nopreempt: serving %v after the primary returned, want the standby still", got)
			}
			time.Sleep(10 * time.Millisecond)
		}
		if _, err := p.FailBack("test"); err != nil {
			t.Fatal(err)
		}
		waitServing(t, p, "10.0.0.1", "after the fail-back command")
		sw.Set("10.0.0.2", true)
		sw.Set("10.0.0.1", true)
		sw.Set("10.0.0.1", false) // both died, the primary came back: the highest healthy serves
		waitServing(t, p, "10.0.0.1", "after all down")
	})
	t.Run("reload keeps the serving group under nopreempt", func(t *testing.T) {
		p, sw := groupPool(t, balance.Preemption{Never: true})
		waitServing(t, p, "10.0.0.1", "at start")
		sw.Set("10.0.0.1", true)
		waitServing(t, p, "10.0.0.2", "primary dead")
		sw.Set("10.0.0.1", false)
		time.Sleep(100 * time.Millisecond) // the primary is healthy again
		// A reload: a new pool of the same backends and priorities starts while the old runs.
		next := New(p.cfg, p.reg, p.metrics)
		startPool(t, next)
		p.Stop()
		if got := serving(next); len(got) != 1 || got[0] != "10.0.0.2" {
			t.Errorf("after a reload the new pool serves %v, want the standby it took over", got)
		}
	})
}
