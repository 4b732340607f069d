package pool

import (
	"context"
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/healthdns/healthdns/health"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestPoolReport: a report feeds the zone's push check; a backend is served while its push
// check and its probed check both pass; reports of backends the zone does not list, and to a
// zone without a push check, are refused with their kind and counted.
func TestPoolReport(t *testing.T) {
	cfg := testConfig("push.lan.", "10.0.0.1", "10.0.0.2")
	cfg.Checks = append(cfg.Checks, health.Check{Kind: health.Push, TTL: time.Hour})
	cfg.Spec.Fall = 1
	cfg.AllDown = AllDownServfail
	p := newTestPool(cfg, func(context.Context, netip.Addr) error { return nil })
	startPool(t, p) // the start does not wait for the nodes' first reports
	a := netip.MustParseAddr("10.0.0.1")

	if got := serving(p); len(got) != 0 {
		t.Fatalf("serving %v before any report; want none", got)
	}
	up, err := p.Report(a, Report{Pass: true, Output: "postgres primary"}, "test")
	if err != nil || !up {
		t.Fatalf("report pass: up %v, %v", up, err)
	}
	waitServing(t, p, "10.0.0.1", "the reported backend, and not the silent one")
	if up, err := p.Report(netip.MustParseAddr("10.0.0.2"), Report{Output: "disk full"}, "test"); err != nil || up {
		t.Fatalf("report fail of 10.0.0.2: up %v, %v", up, err)
	}

	if up, err := p.Report(a, Report{Output: "postgres down"}, "test"); err != nil || up {
		t.Fatalf("report fail with fall 1: up %v, %v; want down at once", up, err)
	}
	eventually(t, "the pool to be all down", func() bool { return p.Snapshot().AllDown })
	st := p.Status().Backends[0].Checks[1]
	if health.Reason(st.LastFailure) != health.ReasonPushFail || st.LastFailure.Error() != "push: reported fail: postgres down" {
		t.Errorf("push check's status: last failure %v; want the reported fail and its output", st.LastFailure)
	}

	refusals := []struct {
		pool *Pool
		addr string
		kind Refusal
		why  string
	}{
		{p, "10.0.0.9", NotFound, ReportUnlisted},
		{p, "10.0.0.9", NotFound, ReportUnlisted},
		{startedWithout(t), "10.0.0.1", Conflict, ReportNoPush},
	}
	for _, r := range refusals {
		_, err := r.pool.Report(netip.MustParseAddr(r.addr), Report{Pass: true}, "test")
		var re *RefusedError
		if !errors.As(err, &re) || re.Kind != r.kind {
			t.Errorf("report of %s to %s: %v; want refusal kind %d", r.addr, r.pool.Zone(), err, r.kind)
		}
	}
	if n := testutil.ToFloat64(p.metrics.ReportsRefusedTotal.WithLabelValues("", "push.lan.", ReportUnlisted)); n != 2 {
		t.Errorf("reports refused as unlisted: %v, want 2", n)
	}
}

// startedWithout is a running pool with no push check.
func startedWithout(t *testing.T) *Pool {
	p := newTestPool(testConfig("probed.lan.", "10.0.0.1"), func(context.Context, netip.Addr) error { return nil })
	startPool(t, p)
	return p
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
