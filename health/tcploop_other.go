//go:build !linux

package health

// tcpTarget is empty where there is no tcpConnector: TCP monitors dial on goroutines of their
// own (Monitor.run).
type tcpTarget struct{}

type synTarget struct{}

func (r *Registry) tcpProberLocked(port uint16) Prober { return &TCPProber{Port: port} }
