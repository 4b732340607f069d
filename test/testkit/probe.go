package testkit

import (
	"context"
	"errors"
	"net/netip"
	"sync"
)

// Switchboard is a probe (health.WithProbe) whose dead addresses a test changes while its pools
// run: a dead address fails as a refused TCP connection does, every other passes.
type Switchboard struct {
	mu   sync.Mutex
	dead map[netip.Addr]bool
}

// NewSwitchboard returns a switchboard on which addrs are dead.
func NewSwitchboard(addrs ...string) *Switchboard {
	s := &Switchboard{dead: map[netip.Addr]bool{}}
	for _, a := range addrs {
		s.Set(a, true)
	}
	return s
}

// Set makes addr dead or alive from its next probe on.
func (s *Switchboard) Set(addr string, dead bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.dead[netip.MustParseAddr(addr)] = dead
}

// Probe is the probe: it fails for a dead address.
func (s *Switchboard) Probe(_ context.Context, a netip.Addr) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.dead[a] {
		return errors.New("tcp :80: connection refused")
	}
	return nil
}
