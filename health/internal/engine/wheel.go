package engine

import "math"

// wheel holds a Loop's pending events in slots of one Tick, a timing wheel (Varghese
// and Lauck, as the kernel's timers): adding an event and taking a due one cost O(1) whatever
// the number of targets. It replaced a binary heap of targets, whose comparisons chased a
// pointer into a different target at every level: at 10,000 targets that was a fifth of the
// probe loop's CPU (bench/RESULTS.md).
//
// An event is never removed. A target that moves on to another event, or is unscheduled, makes
// its earlier events stale, and the loop drops them when they come due (byID's generations).
// Events hold no pointers, so the wheel costs the garbage collector nothing to scan.
type wheel struct {
	slots [][]wheelEvent // slot (at / loopTick) % wheelSlots
	spare []wheelEvent   // a slot's backing array, kept for the next slot expire empties
	tick  int64          // the earliest tick whose slot may hold a due event
	size  int            // events held, stale ones included
}

type wheelEvent struct {
	at  int64  // nanoseconds since the loop's epoch, never negative
	id  uint32 // the target's place in Loop.byID
	gen uint32 // byID's generation of that place when the event was added
}

// wheelSlots is one lap of the wheel in ticks. An event further away than a lap waits in its
// slot and is looked at, and kept, once every lap.
const (
	wheelSlots = 2048
	tickNanos  = int64(Tick)
)

func (w *wheel) add(e wheelEvent) {
	if w.slots == nil {
		w.slots = make([][]wheelEvent, wheelSlots)
	}
	// An event already due goes in the slot expire looks at first.
	t := max(e.at/tickNanos, w.tick)
	w.slots[t%wheelSlots] = append(w.slots[t%wheelSlots], e)
	w.size++
}

// expire hands fire every event due by now (nanoseconds since the epoch), in the order of
// their ticks. fire may add events; one already due by now is fired in this call or the next.
func (w *wheel) expire(now int64, fire func(wheelEvent)) {
	if w.size == 0 {
		w.tick = max(w.tick, now/tickNanos)
		return
	}
	last := now / tickNanos
	first := max(w.tick, last-wheelSlots+1) // after a lap or more asleep, each slot once
	w.tick = max(w.tick, last)              // its slot may hold events later within the tick
	for t := first; t <= last; t++ {
		i := t % wheelSlots
		events := w.slots[i]
		if len(events) == 0 {
			continue
		}
		w.slots[i] = w.spare[:0]
		for _, e := range events {
			if e.at > now { // a later lap, or later in this tick
				w.slots[i] = append(w.slots[i], e)
				continue
			}
			w.size--
			fire(e)
		}
		clear(events)
		w.spare = events[:0]
	}
}

// next returns the time of the earliest event, or false if the wheel is empty. A stale event
// counts: the loop then wakes for nothing, once.
func (w *wheel) next() (int64, bool) {
	if w.size == 0 {
		return 0, false
	}
	for t := w.tick; t < w.tick+wheelSlots; t++ {
		end := (t + 1) * tickNanos
		earliest := int64(math.MaxInt64)
		for _, e := range w.slots[t%wheelSlots] {
			if e.at < end {
				earliest = min(earliest, e.at)
			}
		}
		if earliest != math.MaxInt64 {
			return earliest, true
		}
	}
	earliest := int64(math.MaxInt64) // every event is a lap or more away
	for _, slot := range w.slots {
		for _, e := range slot {
			earliest = min(earliest, e.at)
		}
	}
	return earliest, true
}

// reset empties the wheel and lets its memory go.
func (w *wheel) reset() {
	*w = wheel{tick: w.tick}
}
