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
// the probe's deadline, or when its probe ends.
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
	probe  uint64             // counts the target's probes, so that a late try's outcome is dropped
	ctx    context.Context    // of the probe in flight's tries
	cancel context.CancelFunc // ends them
}

type blockingDone struct {
	s     *engine.Slot[BlockingState]
	probe uint64
	err   error
}

// NewBlocking returns a blocking wire.
func NewBlocking() *Blocking { return &Blocking{} }

// Prepare implements engine.Wire.
func (b *Blocking) Prepare(s *engine.Slot[BlockingState], t *engine.Target) {
	s.State = BlockingState{run: t.Run, name: t.Name}
}

// Try implements engine.Wire: it starts the try on a goroutine of its own.
func (b *Blocking) Try(s *engine.Slot[BlockingState], first bool) error {
	st := &s.State
	if first {
		st.probe++
		st.ctx, st.cancel = context.WithDeadline(context.Background(), s.Deadline())
	}
	ctx, run, addr, probe := st.ctx, st.run, s.Addr, st.probe
	b.tries.Add(1)
	go func() {
		defer b.tries.Done()
		err := run(ctx, addr)
		if err != nil && (ctx.Err() != nil || Reason(err) == ReasonTimeout) {
			// Cut short by the deadline or the probe's end, or by a socket deadline set to the
			// same instant that fired first: the loop's own timeout says so, with the timeout
			// configured rather than what was left of it when this try began.
			return
		}
		b.mu.Lock()
		b.done = append(b.done, blockingDone{s, probe, err})
		b.mu.Unlock()
		s.Poke()
	}()
	return nil
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
			answers = append(answers, engine.Answer[BlockingState]{Slot: d.s, Err: d.err})
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
