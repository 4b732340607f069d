//go:build !linux

package health

import "github.com/healthdns/healthdns/health/internal/engine"

// tcpLoopLocked returns nil: outside Linux, TCP checks dial on the blocking wire.
func (r *Registry) tcpLoopLocked() engine.Scheduler { return nil }
