package pool

import (
	"os"
	"path/filepath"
	"testing"

	"go.uber.org/goleak"

	"github.com/healthdns/healthdns/balance"
	"github.com/healthdns/healthdns/test/testkit"
)

// Every goroutine a pool starts ends when its tests have stopped it (docs/DESIGN.md, "Who owns
// each goroutine").
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestStopEndsItsGoroutines: Stop ends the goroutines a pool owns (its rebuilder, its source's
// watch, the fleet's proposals) and its probe loops, whatever its source, and whether or not its
// source ever answered: a reload that fails after its pools started stops them the same way.
func TestStopEndsItsGoroutines(t *testing.T) {
	list := filepath.Join(t.TempDir(), "list")
	if err := os.WriteFile(list, []byte("10.0.0.3\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	file := testConfig("file.lan.", "10.0.0.1")
	file.Source = Source{Kind: SourceFile, Path: list}
	if err := file.Source.ReadFile(file.Backends); err != nil || len(file.Source.Initial) != 1 {
		t.Fatal("the backends file did not read")
	}
	// An etcd that refuses (nothing listens on port 9), under nopreempt with two groups: the
	// source's retries and the agreement both run.
	fleet := testConfig("fleet.lan.", "10.0.0.1", "10.0.0.2")
	fleet.Backends[0].Priority = 200
	fleet.Preempt = balance.Preemption{Never: true}
	fleet.Source = Source{Kind: SourceEtcd, Etcd: EtcdSource{Endpoints: []string{"http://127.0.0.1:9"}, Prefix: "/healthdns/fleet.lan/"}}

	for _, cfg := range []Config{testConfig("plain.lan.", "10.0.0.1"), file, fleet} {
		t.Run(cfg.Zone, func(t *testing.T) {
			before := goleak.IgnoreCurrent()
			sw := testkit.NewSwitchboard()
			p := newTestPool(cfg, sw.Probe)
			startPool(t, p)
			if len(serving(p)) == 0 {
				t.Fatal("nothing served after start")
			}
			p.Stop()
			goleak.VerifyNone(t, before)
		})
	}
}
