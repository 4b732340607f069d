package engine

import (
	"context"
	"sync"
	"time"
)

// Turns bound how many tries of the targets sharing them run at once (scripts: each is a
// process, and a host runs only so many). A try that finds every turn taken waits for one, in
// the order the tries came, rather than fail: a limit on the prober's load is no fault of the
// backend. The loop counts such a probe's timeout from when its try got a turn (Answer.Started),
// so a probe may be late, never failed, because others ran.
//
// The queue needs no bound of its own: a target has at most one try in flight or waiting (a
// target with Turns gets one try per probe, and its next probe is not due before this one
// ended), so at most as many tries wait as there are targets.
type Turns struct {
	mu      sync.Mutex
	limit   int
	running int
	queue   []chan struct{} // the waiting tries, first come first; closed when granted

	waits  uint64        // tries that had to wait
	waited time.Duration // how long they waited, in all
}

// NewTurns returns limit turns; limit is at least 1.
func NewTurns(limit int) *Turns { return &Turns{limit: max(limit, 1)} }

// SetLimit changes how many tries may run at once. Raised, it lets waiting tries run at once;
// lowered, the tries running finish and no new one starts until fewer than limit run.
func (t *Turns) SetLimit(limit int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.limit = max(limit, 1)
	t.grantLocked()
}

// Limit is how many tries may run at once.
func (t *Turns) Limit() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.limit
}

// Take waits for a turn, or for ctx to end (then it returns ctx's error and holds no turn). The
// holder gives the turn back with Give once its try has ended.
func (t *Turns) Take(ctx context.Context) error {
	t.mu.Lock()
	if t.running < t.limit && len(t.queue) == 0 {
		t.running++
		t.mu.Unlock()
		return nil
	}
	granted := make(chan struct{})
	t.queue = append(t.queue, granted)
	since := time.Now()
	t.mu.Unlock()

	select {
	case <-granted:
		t.mu.Lock()
		t.waits++
		t.waited += time.Since(since)
		t.mu.Unlock()
		return nil
	case <-ctx.Done():
	}
	t.mu.Lock()
	for i, c := range t.queue {
		if c == granted {
			t.queue = append(t.queue[:i], t.queue[i+1:]...)
			t.mu.Unlock()
			return ctx.Err()
		}
	}
	t.mu.Unlock()
	t.Give() // granted as ctx ended: the turn goes to the next
	return ctx.Err()
}

// Give returns a turn that Take gave.
func (t *Turns) Give() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.running--
	t.grantLocked()
}

func (t *Turns) grantLocked() {
	for t.running < t.limit && len(t.queue) > 0 {
		close(t.queue[0])
		t.queue[0] = nil
		t.queue = t.queue[1:]
		t.running++
	}
}

// TurnStats is what Turns have done.
type TurnStats struct {
	Limit   int
	Running int           // tries holding a turn now
	Waiting int           // tries waiting for one now
	Waits   uint64        // tries that have waited, since NewTurns
	Waited  time.Duration // how long they waited, in all
}

// Stats returns what t has done.
func (t *Turns) Stats() TurnStats {
	t.mu.Lock()
	defer t.mu.Unlock()
	return TurnStats{Limit: t.limit, Running: t.running, Waiting: len(t.queue), Waits: t.waits, Waited: t.waited}
}
