package pool

import (
	"context"
	"testing"

	"github.com/healthdns/healthdns/balance"
	"github.com/healthdns/healthdns/source"
)

// wroteStore is a fleetStore whose compare-and-swap goes through at revision rev.
type wroteStore struct{ rev int64 }

func (s wroteStore) CompareAndSwap(_ context.Context, _ string, _ int64, value string) (bool, source.KeyValue, error) {
	return true, source.KeyValue{Value: value, ModRevision: s.rev}, nil
}
func (wroteStore) CompareAndDelete(context.Context, string, int64) (bool, error) { return true, nil }
func (wroteStore) Put(context.Context, string, string) (int64, error)            { return 0, nil }
func (wroteStore) Delete(context.Context, string) (bool, int64, error)           { return false, 0, nil }
func (wroteStore) PutLeased(context.Context, string, string) (int64, error)      { return 0, nil }

// A list the watch brings after this server's own compare-and-swap went through, but of an
// older revision, is not taken for the key: it would bring back the group the fleet just left
// (seen in the lab: a server answered the primary again for a moment, under nopreempt). A list
// at the write's revision or later is etcd's word again, and an outage forgets the write.
func TestAgreementIgnoresListsOlderThanItsWrite(t *testing.T) {
	cfg := testConfig("fleet.lan.", "10.0.0.1", "10.0.0.2")
	cfg.Backends[0].Priority = 200
	cfg.Preempt = balance.Preemption{Never: true}
	cfg.Source = Source{Kind: SourceEtcd, Etcd: EtcdSource{Prefix: "/healthdns/fleet.lan/"}}
	p := newTestPool(cfg, nil)
	// Never started: the rebuilds that follow each list do nothing, and what is read here is
	// the agreement the lists and the write leave.
	p.stopped = true
	key := agreementKey(0)
	group := func() uint8 {
		p.mu.Lock()
		defer p.mu.Unlock()
		return p.agree.fam[0].group
	}
	p.agreed(map[string]source.KeyValue{key: {Value: "200", ModRevision: 12}}, 12)
	p.propose(context.Background(), wroteStore{rev: 16}, 0, 200, 12, 100, agreedByFleet)
	if g := group(); g != 100 {
		t.Fatalf("after its write of 100 at revision 16, the pool holds group %d", g)
	}

	p.agreed(map[string]source.KeyValue{key: {Value: "200", ModRevision: 12}}, 14)
	if g := group(); g != 100 {
		t.Errorf("a list of revision 14 (the key at 12, 200) after the write at 16: the pool holds group %d, want 100", g)
	}
	p.agreed(map[string]source.KeyValue{key: {Value: "100", ModRevision: 16}}, 16)
	p.agreed(map[string]source.KeyValue{key: {Value: "200", ModRevision: 20}}, 20) // an operator's fail-back
	if g := group(); g != 200 {
		t.Errorf("a list of revision 20 (200, the operator's) after the watch caught up: the pool holds group %d, want 200", g)
	}

	// An outage forgets the write: what etcd lists after it is taken, whatever its revision.
	p.propose(context.Background(), wroteStore{rev: 30}, 0, 200, 20, 100, agreedByFleet)
	p.connected(false, context.DeadlineExceeded)
	p.agreed(map[string]source.KeyValue{key: {Value: "200", ModRevision: 3}}, 5)
	if g := group(); g != 200 {
		t.Errorf("the first list after an outage (an etcd restored, at revision 5): the pool holds group %d, want its 200", g)
	}
}
