package engine

import (
	"math/rand/v2"
	"slices"
	"testing"
)

// The wheel against a list: random events, some further away than a lap, some added while
// expiring, and expiries at random steps, some longer than a lap. Every event must fire
// exactly once, at the first expiry that finds it due, and next must name the earliest
// pending event.
func TestWheelAgainstList(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	var w wheel
	pending := map[uint32]int64{} // id → at
	var id uint32
	now := int64(0)
	add := func(at int64) {
		id++
		pending[id] = at
		w.add(wheelEvent{at: at, id: id})
	}
	for round := range 3000 {
		for range rng.IntN(8) {
			switch rng.IntN(5) {
			case 0: // beyond a lap
				add(now + rng.Int64N(3*wheelSlots*tickNanos))
			case 1: // on a tick, which the expiring steps below may hit exactly
				add((now/tickNanos + rng.Int64N(20)) * tickNanos)
			default:
				add(now + rng.Int64N(50*tickNanos))
			}
		}
		if at, ok := w.next(); ok != (len(pending) > 0) {
			t.Fatalf("round %d: next says %v with %d pending", round, ok, len(pending))
		} else if ok {
			earliest := slices.Min(mapValues(pending))
			if at != earliest {
				t.Fatalf("round %d: next %d, earliest pending %d", round, at, earliest)
			}
		}
		step := rng.Int64N(20 * tickNanos)
		if rng.IntN(2) == 0 {
			step = (now/tickNanos+1+rng.Int64N(20))*tickNanos - now
		}
		if rng.IntN(200) == 0 {
			step = int64(wheelSlots+rng.IntN(wheelSlots)) * tickNanos // asleep over a lap
		}
		now += step
		w.expire(now, func(e wheelEvent) {
			at, ok := pending[e.id]
			switch {
			case !ok:
				t.Fatalf("round %d: event %d fired twice, or was never added", round, e.id)
			case at != e.at || at > now:
				t.Fatalf("round %d: event %d at %d fired at %d", round, e.id, at, now)
			}
			delete(pending, e.id)
			if rng.IntN(3) == 0 { // as the loop does: the target's next event
				add(now + 1 + rng.Int64N(5*tickNanos))
			}
		})
		for i, at := range pending {
			if at <= now {
				t.Fatalf("round %d: event %d due at %d still pending at %d", round, i, at, now)
			}
		}
		if w.size != len(pending) {
			t.Fatalf("round %d: size %d, %d pending", round, w.size, len(pending))
		}
	}
}

// An event added in the past (before the tick the wheel has reached) must still fire.
func TestWheelPastEvent(t *testing.T) {
	var w wheel
	w.expire(100*tickNanos, func(wheelEvent) {})
	w.add(wheelEvent{at: 3 * tickNanos, id: 7})
	if at, ok := w.next(); !ok || at != 3*tickNanos {
		t.Fatalf("next = %d, %v", at, ok)
	}
	var fired []uint32
	w.expire(100*tickNanos+1, func(e wheelEvent) { fired = append(fired, e.id) })
	if !slices.Equal(fired, []uint32{7}) || w.size != 0 {
		t.Fatalf("fired %v, size %d", fired, w.size)
	}
}

func mapValues(m map[uint32]int64) []int64 {
	out := make([]int64, 0, len(m))
	for _, v := range m {
		out = append(out, v)
	}
	return out
}
