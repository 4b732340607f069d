package wire

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/healthdns/healthdns/health/internal/engine"
)

// Blocking runs checks that block (a dial, a ping through pro-bing, an HTTP request, a script)
// on a goroutine per try, and hands their outcomes to its loop at the next wake. The loop keeps
// their schedule, tries, budget and deadline as for every other wire; a try's context ends at
// the probe's deadline, or when its probe ends. A target with turns (a script) waits for one on
// its try's goroutine, and its try's context ends its timeout after the turn came.
type Blocking struct {
	tries sync.WaitGroup // every try's goroutine

	mu   sync.Mutex // guards done, which the tries fill
	done []blockingDone

	// The loop goroutine's, reused at every wake.
	taken   []blockingDone
	answers []engine.Answer[BlockingState]
}

// BlockingState is what Blocking keeps of a scheduled target.
type BlockingState struct {
	run    func(ctx context.Context, addr netip.Addr) error
	name   string
	turns  *engine.Turns      // nil: the try runs at once
	probe  uint64             // counts the target's probes, so that a late try's outcome is dropped
	ctx    context.Context    // of the probe in flight's tries
	cancel context.CancelFunc // ends them
}

type blockingDone struct {
	s       *engine.Slot[BlockingState]
	probe   uint64
	err     error
	started time.Time // not zero: the try got its turn then, and this is not its outcome
}

// NewBlocking returns a blocking wire.
func NewBlocking() *Blocking { return &Blocking{} }

// Prepare implements engine.Wire.
func (b *Blocking) Prepare(s *engine.Slot[BlockingState], t *engine.Target) {
	s.State = BlockingState{run: t.Run, name: t.Name, turns: t.Turns}
}

// Try implements engine.Wire: it starts the try on a goroutine of its own.
func (b *Blocking) Try(s *engine.Slot[BlockingState], first bool) error {
	st := &s.State
	if first {
		st.probe++
		if st.turns != nil {
			st.ctx, st.cancel = context.WithCancel(context.Background()) // the deadline is set by the turn
		} else {
			st.ctx, st.cancel = context.WithDeadline(context.Background(), s.Deadline())
		}
	}
	ctx, run, addr, probe, turns, timeout := st.ctx, st.run, s.Addr, st.probe, st.turns, s.Timeout()
	b.tries.Add(1)
	go func() {
		defer b.tries.Done()
		if turns != nil {
			if turns.Take(ctx) != nil {
				return // the probe ended while it waited
			}
			defer turns.Give()
			b.post(blockingDone{s: s, probe: probe, started: time.Now()})
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, timeout)
			defer cancel()
		}
		err := run(ctx, addr)
		if err != nil && (ctx.Err() != nil || Reason(err) == ReasonTimeout) {
			// Cut short by the deadline or the probe's end, or by a socket deadline set to the
			// same instant that fired first: the loop's own timeout says so, with the timeout
			// configured rather than what was left of it when this try began.
			return
		}
		b.post(blockingDone{s: s, probe: probe, err: err})
	}()
	return nil
}

// post hands d to the loop, and wakes it.
func (b *Blocking) post(d blockingDone) {
	b.mu.Lock()
	b.done = append(b.done, d)
	b.mu.Unlock()
	d.s.Poke()
}

// End implements engine.Wire: it cancels the probe's tries.
func (b *Blocking) End(s *engine.Slot[BlockingState]) {
	if s.State.cancel != nil {
		s.State.cancel()
		s.State.ctx, s.State.cancel = nil, nil
	}
}

// Poll implements engine.Wire.
func (b *Blocking) Poll() {
	b.mu.Lock()
	b.taken, b.done = b.done, b.taken[:0]
	b.mu.Unlock()
}

// Answered implements engine.Wire: the outcomes of the tries that ended, but for those of a
// probe that is over.
func (b *Blocking) Answered() []engine.Answer[BlockingState] {
	answers := b.answers[:0]
	for _, d := range b.taken {
		if d.probe == d.s.State.probe {
			answers = append(answers, engine.Answer[BlockingState]{Slot: d.s, Err: d.err, Started: d.started})
		}
	}
	clear(b.taken)
	b.answers = answers
	return answers
}

// Flush implements engine.Wire: each try started when it was made.
func (b *Blocking) Flush() []engine.Answer[BlockingState] { return nil }

// TimedOut implements engine.Wire. A ping has no reply, as the echo wire's; a script did not
// finish (and its process group is killed as End cancels it); anything else had no answer, as
// the TCP wires say.
func (b *Blocking) TimedOut(s *engine.Slot[BlockingState], _ time.Duration) error {
	switch name := s.State.name; {
	case name == "icmp":
		return fmt.Errorf("icmp: %w", errNoReply{s.Timeout()})
	case strings.HasPrefix(name, "exec "):
		return fmt.Errorf("%s: %w", name, errUnfinished{s.Timeout()})
	default:
		return fmt.Errorf("%s: %w", name, errTimeout{s.Timeout(), context.DeadlineExceeded})
	}
}

// Close implements engine.Wire: it waits for the tries still running, whose probes have all
// ended, so that no goroutine outlives the loop.
func (b *Blocking) Close() { b.tries.Wait() }
