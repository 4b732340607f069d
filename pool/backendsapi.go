package pool

import (
	"context"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/healthdns/healthdns/event"

	"github.com/healthdns/healthdns/balance"
	"github.com/healthdns/healthdns/source"
)

// A zone whose list is in etcd takes its backends' writes through the status API: each backend
// is its key, PREFIX followed by the address, holding the rest of a backend line, the very key
// an operator writes with etcdctl. A write is a compare-and-swap on the key's revision, so that
// two consoles, or two servers' APIs, never overwrite each other blindly; every server of the
// fleet applies it through its watch, this one included. Backends listed elsewhere (a backend
// line, a backends file) are refused: the API would be overwritten by the next load of their
// list.

// BackendKey is a backend's etcd key as the API shows and writes it.
type BackendKey struct {
	Key      string // the full key, prefix and address
	Value    string // the rest of a backend line
	Revision int64  // the revision that last changed it, which a write names; 0 when absent
	Exists   bool
}

// StaleError is a write that named a revision the key no longer has (or a creation of a key
// that exists): nothing was written, and Current is what is there.
type StaleError struct {
	Current BackendKey
	msg     string
}

func (e *StaleError) Error() string { return e.msg }

// BackendSettings are what the API sets of a backend: the words of its backend line.
type BackendSettings struct {
	Weight   uint32 // 0 for the default, 1
	Priority uint8  // 0 for the default
	Drain    Drain
}

// backendStore is what a backend's writes go through: the etcd source (source.Etcd) while it
// runs.
type backendStore interface {
	Get(ctx context.Context, key string) (current source.KeyValue, found bool, err error)
	CompareAndSwap(ctx context.Context, key string, modRevision int64, value string) (ok bool, current source.KeyValue, err error)
	CompareAndDelete(ctx context.Context, key string, modRevision int64) (bool, error)
}

// BackendValue is the value of a backend's etcd key for s: the words of a backend line after
// its address, defaults left out.
func BackendValue(s BackendSettings) string {
	var words []string
	if s.Weight != 0 && s.Weight != 1 {
		words = append(words, "weight", strconv.FormatUint(uint64(s.Weight), 10))
	}
	if s.Priority != 0 && s.Priority != balance.DefaultPriority {
		words = append(words, "priority", strconv.Itoa(int(s.Priority)))
	}
	if s.Drain.On {
		words = append(words, "drain")
		if !s.Drain.Until.IsZero() {
			words = append(words, "until", s.Drain.Until.UTC().Format(time.RFC3339))
		}
		if s.Drain.Reason != "" {
			words = append(words, s.Drain.Reason)
		}
	}
	return strings.Join(words, " ")
}

// backendStoreFor returns the store of backend addr's key, once it has checked that the API may
// write it: the pool runs, keeps its list in etcd, reaches etcd, and lists addr nowhere else.
func (p *Pool) backendStoreFor(addr netip.Addr) (backendStore, string, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := p.runningLocked(); err != nil {
		return nil, "", err
	}
	for _, b := range p.cfg.Backends {
		if b.Addr == addr {
			return nil, "", refuse(ReadOnly, "zone %s: backend %s is listed by its backend line in the Corefile; change it there", p.cfg.Zone, addr)
		}
	}
	if p.cfg.Source.Kind != SourceEtcd {
		where := "its backend lines in the Corefile"
		if p.cfg.Source.Kind == SourceFile {
			where = "the backends " + p.cfg.Source.String()
		}
		return nil, "", refuse(ReadOnly, "zone %s takes its backends from %s, not from etcd: the API writes only a zone with backends_etcd; change them there",
			p.cfg.Zone, where)
	}
	full := p.cfg.Source.Etcd.Prefix + addr.String()
	// The fleet store is the etcd source itself, which reads keys as well as it writes them.
	store, ok := p.agree.Etcd.(backendStore)
	if !ok || !p.src.connected {
		return nil, "", refuse(Unavailable, "zone %s: backend %s: the zone's backends are in etcd, which cannot be reached now (%s): try again once etcd answers",
			p.cfg.Zone, addr, full)
	}
	return store, full, nil
}

func backendKey(full string, kv source.KeyValue, exists bool) BackendKey {
	return BackendKey{Key: full, Value: kv.Value, Revision: kv.ModRevision, Exists: exists}
}

// Backend reads backend addr's etcd key, for its value and the revision a write names.
func (p *Pool) Backend(ctx context.Context, addr netip.Addr) (BackendKey, error) {
	store, full, err := p.backendStoreFor(addr)
	if err != nil {
		return BackendKey{}, err
	}
	kv, found, err := store.Get(ctx, addr.String())
	if err != nil {
		return BackendKey{}, refuse(Unavailable, "zone %s: backend %s: %v", p.cfg.Zone, addr, err)
	}
	if !found {
		return BackendKey{}, refuse(NotFound, "zone %s has no backend %s in etcd (no key %s)", p.cfg.Zone, addr, full)
	}
	return backendKey(full, kv, true), nil
}

// SetBackend writes backend addr's key as s says, if the key's last change was at revision
// (0: the key must not exist), and waits until this server's list has it. by names the caller
// for the log.
func (p *Pool) SetBackend(ctx context.Context, addr netip.Addr, s BackendSettings, revision int64, by string) (BackendKey, error) {
	value := BackendValue(s)
	// The value must read back as what was asked, or every server would skip the key.
	b, err := ParseBackendWords(append([]string{addr.String()}, strings.Fields(value)...))
	if err != nil {
		return BackendKey{}, refuse(Invalid, "zone %s: %v", p.cfg.Zone, err)
	}
	if b.Drain.Reason != s.Drain.Reason {
		return BackendKey{}, refuse(Invalid, "zone %s: backend %s: the drain reason must be words separated by single spaces", p.cfg.Zone, addr)
	}
	store, full, err := p.backendStoreFor(addr)
	if err != nil {
		return BackendKey{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, fleetWriteTimeout)
	defer cancel()
	ok, cur, err := store.CompareAndSwap(ctx, addr.String(), revision, value)
	if err != nil {
		return BackendKey{}, refuse(Unavailable, "zone %s: backend %s was not written: %v", p.cfg.Zone, addr, err)
	}
	if !ok {
		return BackendKey{}, stale(p.cfg.Zone, addr, full, revision, cur)
	}
	log.Infof("zone %s: backend %s: set to '%s' by %s via the status API, written to etcd %s (revision %d) for the fleet",
		p.cfg.Zone, addr, value, by, full, cur.ModRevision)
	// The write's own event, on the server that took it: every server's list then says
	// backend_added when the key is new, with no caller.
	p.publish(event.Event{Kind: event.BackendSet, Backend: addr.String(), Value: value, By: apiCaller(by), Source: p.cfg.Source.Label()})
	p.awaitWrite(ctx, addr, cur.ModRevision)
	return backendKey(full, cur, true), nil
}

// RemoveBackend deletes backend addr's key if its last change was at revision, and waits until
// this server's list no longer has it. It returns the key as it was.
func (p *Pool) RemoveBackend(ctx context.Context, addr netip.Addr, revision int64, by string) (BackendKey, error) {
	store, full, err := p.backendStoreFor(addr)
	if err != nil {
		return BackendKey{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, fleetWriteTimeout)
	defer cancel()
	kv, found, err := store.Get(ctx, addr.String())
	if err != nil {
		return BackendKey{}, refuse(Unavailable, "zone %s: backend %s was not removed: %v", p.cfg.Zone, addr, err)
	}
	if !found {
		return BackendKey{}, refuse(NotFound, "zone %s has no backend %s in etcd (no key %s)", p.cfg.Zone, addr, full)
	}
	if kv.ModRevision != revision {
		return BackendKey{}, stale(p.cfg.Zone, addr, full, revision, kv)
	}
	deleted, err := store.CompareAndDelete(ctx, addr.String(), revision)
	if err != nil {
		return BackendKey{}, refuse(Unavailable, "zone %s: backend %s was not removed: %v", p.cfg.Zone, addr, err)
	}
	if !deleted { // written between the read and the delete
		kv, found, err = store.Get(ctx, addr.String())
		if err != nil {
			return BackendKey{}, refuse(Unavailable, "zone %s: backend %s was not removed, and changed since revision %d: %v", p.cfg.Zone, addr, revision, err)
		}
		if !found {
			kv = source.KeyValue{}
		}
		return BackendKey{}, stale(p.cfg.Zone, addr, full, revision, kv)
	}
	log.Infof("zone %s: backend %s: removed by %s via the status API, deleted from etcd %s (was '%s', revision %d) for the fleet",
		p.cfg.Zone, addr, by, full, kv.Value, kv.ModRevision)
	p.publish(event.Event{Kind: event.BackendDeleted, Backend: addr.String(), Value: kv.Value, By: apiCaller(by), Source: p.cfg.Source.Label()})
	// The delete's own revision is not known here; the list that follows it is after any
	// revision the key had.
	p.awaitWrite(ctx, addr, kv.ModRevision+1)
	return backendKey(full, kv, true), nil
}

// awaitWrite waits until this server's list is of revision rev or later, so that the caller's
// next query here sees its write.
func (p *Pool) awaitWrite(ctx context.Context, addr netip.Addr, rev int64) {
	if !p.awaitList(ctx, rev) {
		log.Warningf("zone %s: backend %s: etcd has the write (revision %d), and this server's list does not yet; it applies when the list comes", p.cfg.Zone, addr, rev)
	}
}

func stale(zone string, addr netip.Addr, full string, revision int64, cur source.KeyValue) error {
	current := BackendKey{Key: full, Value: cur.Value, Revision: cur.ModRevision, Exists: cur.ModRevision != 0}
	var msg string
	switch {
	case revision == 0:
		msg = fmt.Sprintf("zone %s: backend %s exists already (etcd %s, revision %d): send its revision as If-Match to change it", zone, addr, full, cur.ModRevision)
	case !current.Exists:
		msg = fmt.Sprintf("zone %s: backend %s was removed since revision %d (no key %s): nothing written", zone, addr, revision, full)
	default:
		msg = fmt.Sprintf("zone %s: backend %s changed since revision %d (etcd %s is at revision %d): nothing written; read it again and retry", zone, addr, revision, full, cur.ModRevision)
	}
	return &StaleError{Current: current, msg: msg}
}
