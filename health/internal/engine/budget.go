package engine

import (
	"sync"
	"time"
)

// A retry budget bounds the tries beyond the first, as Finagle's does: every probe earns
// retryShare of a try, time earns retryFloor tries a second (so a small pool on a lossy link
// always has enough), and the balance never exceeds retryCap. Without it, a prober that is slow
// because it is overloaded (10,000 TCP targets on two cores, all starting at once) sends up to
// three times the connections and never recovers; with it, overload adds at most a fifth.
const (
	retryShare = 0.2
	retryFloor = 10.0 // tries per second
	retryCap   = 1000.0
)

// Budget is shared by every loop of a registry.
type Budget struct {
	mu     sync.Mutex
	tokens float64
	last   time.Time
}

func NewBudget() *Budget {
	return &Budget{tokens: retryCap, last: time.Now()}
}

// Deposit records a probe.
func (b *Budget) Deposit() {
	b.mu.Lock()
	b.tokens = min(b.tokens+retryShare, retryCap)
	b.mu.Unlock()
}

// Withdraw takes one try from the budget, if it has one.
func (b *Budget) Withdraw() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	now := time.Now()
	b.tokens = min(b.tokens+now.Sub(b.last).Seconds()*retryFloor, retryCap)
	b.last = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}
