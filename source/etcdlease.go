package source

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// LeaseTTL is how long, in seconds, a key put with PutLeased outlives the last keep-alive of
// its writer: a server that dies or is cut off from etcd loses its keys this long after.
// etcd's own minimum is about 1.5 s; five leaves room for a keep-alive (every third of it) to
// be late twice.
const LeaseTTL = 5

// lease is the one etcd lease of a client's leased keys, granted at the first PutLeased and
// kept alive until it expires (etcd unreachable for LeaseTTL) or the client closes; the next
// PutLeased then grants another.
type lease struct {
	mu sync.Mutex
	id clientv3.LeaseID // 0: none
}

// PutLeased sets key (below the prefix) to value, bound to this client's lease, so that etcd
// deletes it when this client stops keeping the lease alive. It returns the revision of the
// write. While etcd is unreachable it waits for it until ctx ends.
func (e *Etcd) PutLeased(ctx context.Context, key, value string) (revision int64, err error) {
	full := e.cfg.Prefix + key
	for retried := false; ; retried = true {
		id, err := e.leaseID(ctx)
		if err != nil {
			return 0, fmt.Errorf("etcd %s: lease for %s: %w", e.endpoints, full, rpctypes.Error(err))
		}
		resp, err := e.client.Put(ctx, full, value, clientv3.WithLease(id))
		if err == nil {
			return resp.Header.Revision, nil
		}
		err = rpctypes.Error(err)
		// The lease expired before its keep-alive channel said so (etcd was away): one more
		// with a new lease.
		if errors.Is(err, rpctypes.ErrLeaseNotFound) && !retried {
			e.dropLease(id)
			continue
		}
		return 0, fmt.Errorf("etcd %s: put of %s: %w", e.endpoints, full, err)
	}
}

// leaseID returns the client's lease, granting it and starting its keep-alive if there is none.
func (e *Etcd) leaseID(ctx context.Context) (clientv3.LeaseID, error) {
	e.lease.mu.Lock()
	defer e.lease.mu.Unlock()
	if e.lease.id != 0 {
		return e.lease.id, nil
	}
	g, err := e.client.Grant(ctx, LeaseTTL)
	if err != nil {
		return 0, err
	}
	// The keep-alive lives as long as the client: Close ends it, and its channel.
	alive, err := e.client.KeepAlive(e.client.Ctx(), g.ID)
	if err != nil {
		return 0, err
	}
	e.lease.id = g.ID
	go func() {
		for range alive { // closed when the lease expires or the client closes
		}
		e.dropLease(g.ID)
	}()
	return g.ID, nil
}

// dropLease forgets lease id, if it is still the client's.
func (e *Etcd) dropLease(id clientv3.LeaseID) {
	e.lease.mu.Lock()
	if e.lease.id == id {
		e.lease.id = 0
	}
	e.lease.mu.Unlock()
}
