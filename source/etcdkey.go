package source

import (
	"context"
	"fmt"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
)

// Get reads key (below the prefix): its value and the revision that last changed it, which a
// CompareAndSwap or CompareAndDelete names to change it; found is false when the key is absent.
// The status API reads a backend's key so, for the revision a console sends back with its edit.
func (e *Etcd) Get(ctx context.Context, key string) (current KeyValue, found bool, err error) {
	full := e.cfg.Prefix + key
	resp, err := e.client.Get(ctx, full)
	if err != nil {
		return KeyValue{}, false, fmt.Errorf("etcd %s: reading %s: %w", e.endpoints, full, rpctypes.Error(err))
	}
	if len(resp.Kvs) == 0 {
		return KeyValue{}, false, nil
	}
	kv := resp.Kvs[0]
	return keyValue(kv.Value, kv.ModRevision), true, nil
}
