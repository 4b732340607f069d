package health

import (
	"context"
	"net/netip"
	"sync"
	"time"
)

// probeAttempts is how many tries one probe may make within its timeout. A probe is one packet
// exchange (echo request and reply, SYN and SYN-ACK), and one lost packet would fail it: on a
// link losing 30% of packets, a third of all probes, and with fall 2 a flap every dozen
// intervals. TCP retransmits its SYN only after a second, past any useful timeout, so the
// monitor retransmits itself: a new try every timeout/probeAttempts while none has answered, each
// allowed to run until the deadline, as fping's retries do. On a healthy LAN the first try
// answers in well under timeout/3 and no second packet is ever sent.
const probeAttempts = 3

// attempt probes addr with up to tries staggered tries and returns the first conclusive result:
// success, or a failure that came before the deadline (a refused connection or an unreachable
// network is an answer, and asking again would only get it again). When every try runs into the
// deadline, the probe timed out. It returns only after every try has returned, so no goroutine
// outlives the probe. cancel must cancel ctx: the caller's own, because a context derived here
// would cost a registration in its parent at every probe.
//
// The first try runs on the caller's goroutine and the later ones on a timer's, only when the
// first is slow: a probe that is answered in time costs a timer, not a goroutine hand-off.
//
// Later tries are paid from budget, which the registry's monitors share: when it is empty (the
// prober is slow everywhere, not just for one lossy backend), no extra try is sent.
func attempt(ctx context.Context, cancel context.CancelFunc, p Prober, addr netip.Addr, tries int, budget *retryBudget) error {
	deadline, ok := ctx.Deadline()
	if !ok || tries <= 1 {
		return p.Probe(ctx, addr)
	}
	budget.deposit()
	r := &retries{ctx: ctx, cancel: cancel, p: p, addr: addr, left: tries - 1, gap: time.Until(deadline) / time.Duration(tries), budget: budget}
	r.mu.Lock()
	r.timer = time.AfterFunc(r.gap, r.launch)
	r.mu.Unlock()

	err := p.Probe(ctx, addr)
	conclusive := err == nil || ctx.Err() == nil

	r.mu.Lock()
	r.done = true
	launched := r.launched
	r.mu.Unlock()
	r.timer.Stop()
	if launched == 0 {
		return err
	}
	if conclusive {
		cancel()
	}
	for i := 0; i < launched; i++ {
		t := <-r.results
		if !conclusive && t.conclusive {
			err, conclusive = t.err, true
		}
	}
	return err
}

// retries are the tries after the first, started by a timer while the first has no answer.
type retries struct {
	ctx    context.Context
	cancel context.CancelFunc
	p      Prober
	addr   netip.Addr
	gap    time.Duration
	budget *retryBudget

	mu       sync.Mutex
	timer    *time.Timer
	left     int
	launched int
	done     bool // the first try has returned: start no more
	results  chan tryResult
}

type tryResult struct {
	err        error
	conclusive bool
}

// launch runs one more try on the timer's goroutine, and arms the timer for the next.
func (r *retries) launch() {
	r.mu.Lock()
	if r.done || r.left == 0 || !r.budget.withdraw() {
		r.mu.Unlock()
		return
	}
	if r.results == nil {
		r.results = make(chan tryResult, r.left)
	}
	r.left--
	r.launched++
	if r.left > 0 {
		r.timer.Reset(r.gap)
	}
	r.mu.Unlock()

	err := r.p.Probe(r.ctx, r.addr)
	conclusive := err == nil || r.ctx.Err() == nil
	if conclusive {
		r.cancel() // the first try, and any other, can stop waiting
	}
	r.results <- tryResult{err, conclusive}
}
