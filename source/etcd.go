// Package source reads a pool's backends from outside the Corefile and follows their changes.
// It knows nothing of DNS or of the backend line's words: it hands over keys and values, and the
// plugin parses and applies them.
package source

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/url"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
)

// EtcdConfig says where the backends of one pool are kept in etcd.
type EtcdConfig struct {
	Endpoints          []string // client URLs, http:// or https://
	Prefix             string   // the pool's keys are directly below it; it ends in "/"
	Username, Password string   // both or neither
	TLS                *tls.Config
}

// List is one consistent view of the prefix: every key below it as of Revision.
type List struct {
	Revision int64
	// Backends holds the keys without the prefix (an address, or anything else a writer put
	// there: a key nested deeper arrives as "a/b", for the caller to reject) and their values.
	Backends map[string]string
	// Oversized holds the backend keys whose value is over MaxValueSize, with its size: the
	// value is not kept, and the key is not in Backends.
	Oversized map[string]int
	// State holds healthdns's own keys, those whose name starts with "_" (e.g. "_group/ipv4"),
	// with the revision a CompareAndSwap must name to change them.
	State map[string]KeyValue
	// Err, when set, says why the prefix as of Revision was not read (it wraps ErrTooManyKeys):
	// the list is empty, and no list at all, for the caller to keep its last.
	Err error
}

// KeyValue is a value and the revision that last changed it.
type KeyValue struct {
	Value       string
	ModRevision int64
	// Size is the length of a value over MaxValueSize, which is not kept: Value is then "".
	Size int
}

// What one prefix may hold. A value is the rest of a backend line, or one of healthdns's own
// small records (a group number, a drain of a 256-byte reason at most): a few hundred bytes, so
// a value over MaxValueSize is a mistake or an attack, and is not kept (its key is skipped, as
// a key that does not parse is). MaxKeys is the most backends one zone serves
// (balance.MaxSetSize), as for a backends file: a prefix holding more is refused whole, and the
// pool keeps its last list. maxResponseSize bounds one answer from etcd, so that a prefix of
// values too large to keep cannot make the server take them in at once: MaxKeys keys of
// realistic values (under 500 bytes) fit many times over.
const (
	MaxValueSize = 4 << 10
	MaxKeys      = 65536
)

// maxResponseSize is a var for a test, which would otherwise write 64 MiB.
var maxResponseSize = 64 << 20

// ErrResponseTooLarge is wrapped by the error of a read that etcd answered with more than
// maxResponseSize bytes: values over MaxValueSize, which are not kept, still travel.
var ErrResponseTooLarge = errors.New("the prefix is too large to read in one answer")

// responseTooLarge marks err with ErrResponseTooLarge when gRPC refused a response for its
// size, and otherwise returns it as etcd's error.
func responseTooLarge(err error) error {
	if status.Code(err) == codes.ResourceExhausted {
		return fmt.Errorf("%w: %w", ErrResponseTooLarge, err)
	}
	return rpctypes.Error(err)
}

// ErrTooManyKeys is matched by a List's Err when the prefix holds more than MaxKeys keys.
var ErrTooManyKeys = errors.New("too many keys")

type tooManyKeys struct {
	prefix      string
	count, most int64
}

func (e tooManyKeys) Error() string {
	return fmt.Sprintf("etcd prefix %s holds %d keys, more than the %d one zone may hold", e.prefix, e.count, e.most)
}

func (e tooManyKeys) Is(target error) bool { return target == ErrTooManyKeys }

// keyCap is MaxKeys, lowered by tests that would otherwise write 65,537 keys.
var keyCap int64 = MaxKeys

// keyValue keeps value unless it is over MaxValueSize.
func keyValue(value []byte, modRevision int64) KeyValue {
	if len(value) > MaxValueSize {
		return KeyValue{ModRevision: modRevision, Size: len(value)}
	}
	return KeyValue{Value: string(value), ModRevision: modRevision}
}

// Timings of the connection to etcd. The client by itself retries a broken watch forever
// without a word, so an outage is noticed by asking the server, on the watch stream itself,
// every probeEvery, for a progress report: no report within probeTimeout (the stream is
// reconnecting, or the network drops it) ends the watch. Against a stopped etcd server this
// reports the outage 1 to 2 s after the stop, depending on where in the probe's second the
// stop falls (measured 1.15 to 1.97 s with etcd 3.4.23; TestEtcdOutage logs it).
// gRPC keepalive does not serve for this: etcd closes connections that ping more often than
// every 5 s (--grpc-keepalive-min-time); it is set to retire a transport that stopped answering
// so that the reconnections of the retry loop do not wait on it.
const (
	probeEvery       = time.Second
	probeTimeout     = time.Second
	requestTimeout   = 2 * time.Second // a read of the prefix, with the login before it; making a watch
	keepaliveTime    = 10 * time.Second
	keepaliveTimeout = 3 * time.Second
	retryMin         = 250 * time.Millisecond
	retryMax         = 2 * time.Second
)

// errResync ends a watch that can no longer continue without a gap: the revision it would
// resume from was compacted away, or the prefix grew past MaxKeys.
var errResync = errors.New("watch revision compacted")

// errRecount ends the watch of a prefix refused for holding too many keys, at its first change:
// the prefix is counted again, after recountPause, so that a writer adding keys one by one
// does not make the server count it at every key.
var (
	errRecount   = errors.New("the refused prefix changed")
	recountPause = time.Second
)

// Etcd follows one prefix of an etcd cluster.
type Etcd struct {
	cfg       EtcdConfig
	endpoints string // for errors
	client    *clientv3.Client
	lease     lease // of the keys PutLeased writes

	// Set by tests: beforeRead runs before each read of the prefix, afterGet between the read
	// and the start of the watch that continues it.
	beforeRead, afterGet func()
}

// NewEtcd checks cfg and makes a client for it. It does not connect, nor log in: an etcd that
// is down at startup must not keep the server from starting. Run and CompareAndSwap do.
func NewEtcd(cfg EtcdConfig) (*Etcd, error) {
	if len(cfg.Endpoints) == 0 {
		return nil, errors.New("etcd: no endpoint")
	}
	for _, ep := range cfg.Endpoints {
		u, err := url.Parse(ep)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, fmt.Errorf("etcd endpoint %q: want http://HOST:PORT or https://HOST:PORT", ep)
		}
	}
	if !strings.HasSuffix(cfg.Prefix, "/") {
		return nil, fmt.Errorf("etcd prefix %q: must end in /", cfg.Prefix)
	}
	if (cfg.Username == "") != (cfg.Password == "") {
		return nil, errors.New("etcd credentials: a user needs a password and a password a user")
	}
	cfg.Endpoints = append([]string(nil), cfg.Endpoints...)
	// gRPC's own reconnection backoff grows to 2 minutes; a read waiting for the connection
	// sees etcd back only when gRPC tries again. TestEtcdOutage measured, after an outage of
	// 8 s: reconnected 1.4 to 2.1 s after etcd served again with gRPC's backoff, and no later
	// than the test's own probe saw it serve with this one.
	dial := []grpc.DialOption{grpc.WithConnectParams(grpc.ConnectParams{
		Backoff:           backoff.Config{BaseDelay: retryMin, Multiplier: 1.6, Jitter: 0.2, MaxDelay: time.Second},
		MinConnectTimeout: 5 * time.Second,
	}), grpc.WithChainUnaryInterceptor(noteConnectionTrouble)}
	if cfg.Username != "" {
		l := &login{user: cfg.Username, password: cfg.Password}
		dial = append(dial, l.dialOptions()...)
	}
	if u, _ := url.Parse(cfg.Endpoints[0]); u.Scheme == "https" { // the client takes the first one's
		dial = append(dial, grpc.WithTransportCredentials(refusalAwareTLS{credentials.NewTLS(cfg.TLS)}))
	}
	endpoints := strings.Join(cfg.Endpoints, ",")
	c, err := clientv3.New(clientv3.Config{
		Endpoints:            cfg.Endpoints,
		TLS:                  cfg.TLS,
		DialKeepAliveTime:    keepaliveTime,
		MaxCallRecvMsgSize:   maxResponseSize,
		DialKeepAliveTimeout: keepaliveTimeout,
		DialOptions:          dial,
		Logger:               zap.NewNop(), // what fails reaches the caller through onConn
	})
	if err != nil {
		return nil, fmt.Errorf("etcd %s: %w", endpoints, err)
	}
	return &Etcd{cfg: cfg, endpoints: endpoints, client: c}, nil
}

// Close closes the connection. Run returns, and CompareAndSwap fails, afterwards.
func (e *Etcd) Close() error {
	if err := e.client.Close(); err != nil && !errors.Is(err, context.Canceled) {
		return fmt.Errorf("etcd %s: closing: %w", e.endpoints, err)
	}
	return nil
}

// Run reads the prefix, hands the list to onList, then watches the prefix from the next
// revision and hands a whole new list to onList after every change (one list per batch of
// changes the server sends). It returns when ctx is done. onConn(true, nil) says the list is
// read (before the first list and before the list that follows an outage); onConn(false, err)
// says etcd cannot be reached or refuses, once per outage, err naming the endpoints. Meanwhile
// Run retries, reading the prefix afresh when it can. A compaction that the watch cannot
// resume across is followed by a fresh read too, without an outage. onList and onConn are
// called one at a time, from Run's goroutine.
func (e *Etcd) Run(ctx context.Context, onList func(List), onConn func(connected bool, err error)) {
	const (
		unknown = iota
		up
		down
	)
	state := unknown
	retry := retryMin
	connected := func() {
		retry = retryMin
		if state != up {
			state = up
			onConn(true, nil)
		}
	}
	for {
		err := e.follow(ctx, connected, onList)
		if ctx.Err() != nil || e.client.Ctx().Err() != nil {
			return
		}
		if errors.Is(err, errResync) {
			continue
		}
		if errors.Is(err, errRecount) {
			if !sleep(ctx, recountPause) {
				return
			}
			continue
		}
		if state != down {
			state = down
			onConn(false, fmt.Errorf("etcd %s: %w", e.endpoints, err))
		}
		// Jitter spreads a fleet's servers that lost etcd together.
		wait := retry/2 + rand.N(retry/2+1)
		retry = min(2*retry, retryMax)
		if !sleep(ctx, wait) {
			return
		}
	}
}

// sleep waits for d, and reports false if ctx ended first.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// follow reads the prefix, then watches it from the revision read until the watch fails,
// reporting lists on the way.
func (e *Etcd) follow(ctx context.Context, connected func(), onList func(List)) error {
	if e.beforeRead != nil {
		e.beforeRead()
	}
	kvs, rev, err := e.read(ctx)
	if errors.Is(err, ErrTooManyKeys) {
		connected()
		onList(List{Revision: rev, Err: err})
		return e.watch(ctx, nil, rev, onList)
	}
	if err != nil {
		return err
	}
	connected()
	onList(e.list(kvs, rev))
	if e.afterGet != nil {
		e.afterGet()
	}
	return e.watch(ctx, kvs, rev, onList)
}

// read gets every key below the prefix, and the revision of that view. The keys are counted
// first, and a prefix of more than MaxKeys is not read (an error matching ErrTooManyKeys, with
// the revision counted); the read is of the revision counted, so the count is the read's.
func (e *Etcd) read(ctx context.Context) (map[string]KeyValue, int64, error) {
	trouble := &connectionTrouble{}
	rctx, cancel := context.WithTimeout(context.WithValue(clientv3.WithRequireLeader(ctx), connectionTroubleKey{}, trouble), requestTimeout)
	defer cancel()
	count, err := e.client.Get(rctx, e.cfg.Prefix, clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		return nil, 0, fmt.Errorf("reading %s: %w", e.cfg.Prefix, trouble.explain(responseTooLarge(err)))
	}
	rev := count.Header.Revision
	if count.Count > keyCap {
		return nil, rev, tooManyKeys{e.cfg.Prefix, count.Count, keyCap}
	}
	resp, err := e.client.Get(rctx, e.cfg.Prefix, clientv3.WithPrefix(), clientv3.WithRev(rev))
	if err != nil {
		return nil, 0, fmt.Errorf("reading %s: %w", e.cfg.Prefix, trouble.explain(responseTooLarge(err)))
	}
	kvs := make(map[string]KeyValue, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		kvs[string(kv.Key)[len(e.cfg.Prefix):]] = keyValue(kv.Value, kv.ModRevision)
	}
	return kvs, rev, nil
}

// watch applies the changes after rev to kvs and reports a list after each batch, until the
// watch fails, cannot continue (errResync), or ctx is done. A nil kvs is a prefix refused for
// its keys: the watch ends at its first change (errRecount), to count them again.
func (e *Etcd) watch(ctx context.Context, kvs map[string]KeyValue, rev int64, onList func(List)) error {
	// A watcher of its own for each watch, closed when the watch ends. A stream takes its
	// login token when it opens, so the watch needs a stream opened after the read that
	// renewed the login, not the last watch's, which may have reopened with the token an etcd
	// restart voided. And a watcher ends a stream when its last watch goes, but not when that
	// watch was cancelled while the stream was reconnecting (etcd client v3.6 keeps counting
	// it): with the client's shared watcher each etcd restart left such a stream behind, four
	// goroutines for as long as the client lived. Closing the watcher ends its streams in
	// whatever state they are.
	watcher := clientv3.NewWatcher(e.client)
	defer watcher.Close()
	// RequireLeader: a member cut off from its cluster's leader ends the watch rather than
	// serving a frozen view. The progress requests carry the same metadata, to reach the
	// watch's stream.
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	// Watch returns once the server has made the watch. If etcd went away after the read, the
	// stream waits for a connection, for as long as it takes: the progress requests below
	// have not begun, and only this bound reports the outage.
	slow := time.AfterFunc(requestTimeout, cancel)
	changes := watcher.Watch(wctx, e.cfg.Prefix, clientv3.WithPrefix(), clientv3.WithRev(rev+1))
	if !slow.Stop() {
		return fmt.Errorf("watching %s: the watch was not made within %s", e.cfg.Prefix, requestTimeout)
	}
	probe := time.NewTicker(probeEvery)
	defer probe.Stop()
	var asked time.Time // when the unanswered progress request went out; zero when none is
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case resp, ok := <-changes:
			if !ok {
				return fmt.Errorf("watching %s: watch closed", e.cfg.Prefix)
			}
			asked = time.Time{}
			if resp.CompactRevision != 0 {
				return errResync
			}
			if err := resp.Err(); err != nil {
				return fmt.Errorf("watching %s: %w", e.cfg.Prefix, responseTooLarge(err))
			}
			if len(resp.Events) == 0 { // the answer to a progress request, or the watch created
				continue
			}
			if kvs == nil {
				return errRecount
			}
			for _, ev := range resp.Events {
				key := string(ev.Kv.Key)[len(e.cfg.Prefix):]
				if ev.Type == clientv3.EventTypeDelete {
					delete(kvs, key)
				} else {
					kvs[key] = keyValue(ev.Kv.Value, ev.Kv.ModRevision)
				}
				rev = ev.Kv.ModRevision
			}
			if int64(len(kvs)) > keyCap {
				return errResync // read again: counted, and refused
			}
			onList(e.list(kvs, rev))
		case now := <-probe.C:
			if !asked.IsZero() {
				if now.Sub(asked) >= probeTimeout {
					return fmt.Errorf("watching %s: no progress report within %s", e.cfg.Prefix, probeTimeout)
				}
				continue
			}
			// While the client reconnects a broken watch stream, the request waits to be
			// taken: the timeout is the outage detector then.
			pctx, cancelProbe := context.WithTimeout(wctx, probeTimeout)
			err := watcher.RequestProgress(pctx)
			cancelProbe()
			if err != nil {
				return fmt.Errorf("watching %s: progress request: %w", e.cfg.Prefix, rpctypes.Error(err))
			}
			asked = now
		}
	}
}

// list copies kvs into a List, which the caller may keep.
func (e *Etcd) list(kvs map[string]KeyValue, rev int64) List {
	l := List{Revision: rev, Backends: map[string]string{}, Oversized: map[string]int{}, State: map[string]KeyValue{}}
	for k, kv := range kvs {
		switch {
		case strings.HasPrefix(k, "_"):
			l.State[k] = kv
		case kv.Size > 0:
			l.Oversized[k] = kv.Size
		default:
			l.Backends[k] = kv.Value
		}
	}
	return l
}

// CompareAndSwap sets key (below the prefix) to value if its last change was at modRevision;
// modRevision 0 means the key must not exist. When it was changed since, it reports !ok and
// the current value and revision (a zero KeyValue when the key is absent). On success current
// is the new value and its revision. While etcd is unreachable it waits for it until ctx ends.
func (e *Etcd) CompareAndSwap(ctx context.Context, key string, modRevision int64, value string) (ok bool, current KeyValue, err error) {
	full := e.cfg.Prefix + key
	resp, err := e.client.Txn(ctx).
		If(clientv3.Compare(clientv3.ModRevision(full), "=", modRevision)).
		Then(clientv3.OpPut(full, value)).
		Else(clientv3.OpGet(full)).
		Commit()
	if err != nil {
		return false, KeyValue{}, fmt.Errorf("etcd %s: compare-and-swap of %s: %w", e.endpoints, full, rpctypes.Error(err))
	}
	if resp.Succeeded {
		return true, KeyValue{Value: value, ModRevision: resp.Header.Revision}, nil
	}
	if kvs := resp.Responses[0].GetResponseRange().GetKvs(); len(kvs) > 0 {
		current = KeyValue{Value: string(kvs[0].Value), ModRevision: kvs[0].ModRevision}
	}
	return false, current, nil
}

// Put sets key (below the prefix) to value, whatever was there, and returns the revision of
// the write. While etcd is unreachable it waits for it until ctx ends.
func (e *Etcd) Put(ctx context.Context, key, value string) (revision int64, err error) {
	full := e.cfg.Prefix + key
	resp, err := e.client.Put(ctx, full, value)
	if err != nil {
		return 0, fmt.Errorf("etcd %s: put of %s: %w", e.endpoints, full, rpctypes.Error(err))
	}
	return resp.Header.Revision, nil
}

// Delete removes key (below the prefix), and reports whether it was there and the revision
// after the delete. While etcd is unreachable it waits for it until ctx ends.
func (e *Etcd) Delete(ctx context.Context, key string) (existed bool, revision int64, err error) {
	full := e.cfg.Prefix + key
	resp, err := e.client.Delete(ctx, full)
	if err != nil {
		return false, 0, fmt.Errorf("etcd %s: delete of %s: %w", e.endpoints, full, rpctypes.Error(err))
	}
	return resp.Deleted > 0, resp.Header.Revision, nil
}

// CompareAndDelete deletes key (below the prefix) if its last change was at modRevision, and
// reports whether it did: a key written again since is left alone.
func (e *Etcd) CompareAndDelete(ctx context.Context, key string, modRevision int64) (bool, error) {
	full := e.cfg.Prefix + key
	resp, err := e.client.Txn(ctx).
		If(clientv3.Compare(clientv3.ModRevision(full), "=", modRevision)).
		Then(clientv3.OpDelete(full)).
		Commit()
	if err != nil {
		return false, fmt.Errorf("etcd %s: compare-and-delete of %s: %w", e.endpoints, full, rpctypes.Error(err))
	}
	return resp.Succeeded, nil
}
