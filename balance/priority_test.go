package balance

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
)

func groupsOf(ps ...uint8) Groups {
	var g Groups
	for _, p := range ps {
		g.Add(p)
	}
	return g
}

func TestGroups(t *testing.T) {
	g := groupsOf(1, 63, 64, 127, 128, 200, 255)
	for _, p := range []uint8{1, 63, 64, 127, 128, 200, 255} {
		if !g.Has(p) {
			t.Errorf("Has(%d) = false after Add", p)
		}
	}
	for _, p := range []uint8{0, 2, 62, 65, 129, 254} {
		if g.Has(p) {
			t.Errorf("Has(%d) = true, never added", p)
		}
	}
	if g.Len() != 7 {
		t.Errorf("Len = %d, want 7", g.Len())
	}
	if s := g.String(); s != "{255 200 128 127 64 63 1}" {
		t.Errorf("String = %s, want every priority from the highest", s)
	}
	if h, ok := (Groups{}).Highest(); ok {
		t.Errorf("empty Groups has highest %d", h)
	}
	if s := (Groups{}).String(); s != "{}" {
		t.Errorf("empty String = %s", s)
	}
	for _, p := range []uint8{1, 64, 100, 255} {
		if h, ok := groupsOf(p).Highest(); !ok || h != p {
			t.Errorf("Highest of {%d} = %d, %v", p, h, ok)
		}
	}
	if groupsOf(100, 200) != groupsOf(200, 100) || groupsOf(100) == groupsOf(100, 200) {
		t.Error("Groups == compares members, not insertion order")
	}
	t.Run("priority 0 panics", func(t *testing.T) {
		defer func() {
			if r := recover(); r == nil {
				t.Fatal("Add(0) did not panic")
			}
		}()
		var g Groups
		g.Add(0)
	})
}

// failStep is one event for a Failover: a health change (healthy), or the operator's fail-back
// command; then what must hold after it.
type failStep struct {
	at       time.Duration // since the test's start
	healthy  []uint8       // the groups with a healthy backend
	failBack bool          // instead of a health change

	serving uint8         // 0: none
	sw      string        // "from -> to: reason", or "" for no switch
	next    time.Duration // NextCheck since the start, 0 for none
}

var t0 = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)

func (s Switch) String() string {
	if !s.Changed() {
		return ""
	}
	return fmt.Sprintf("%d -> %d: %s", s.From, s.To, s.Reason)
}

// runSteps replays steps on f and checks each outcome.
func runSteps(t *testing.T, f *Failover, steps []failStep) {
	t.Helper()
	for i, st := range steps {
		var sw Switch
		if st.failBack {
			sw = f.FailBack()
		} else {
			sw = f.Update(groupsOf(st.healthy...), t0.Add(st.at))
		}
		what := fmt.Sprintf("step %d (at %s, healthy %v, fail-back %v)", i, st.at, st.healthy, st.failBack)
		if got := sw.String(); got != st.sw {
			t.Fatalf("%s: switch %q, want %q", what, got, st.sw)
		}
		if sw.Changed() == (sw.Reason == "") {
			t.Fatalf("%s: switch %+v: a reason goes with a change, and only then", what, sw)
		}
		if g, ok := f.Serving(); g != st.serving || ok != (st.serving != 0) {
			t.Fatalf("%s: serving %d (%v), want %d", what, g, ok, st.serving)
		}
		if down := f.AllDown(); down != (st.serving == 0) {
			t.Fatalf("%s: AllDown %v with group %d serving", what, down, st.serving)
		}
		at, ok := f.NextCheck()
		if want := t0.Add(st.next); ok != (st.next != 0) || ok && !at.Equal(want) {
			t.Fatalf("%s: NextCheck %s (%v), want %s", what, at.Sub(t0), ok, st.next)
		}
		if g, until, waiting := f.Waiting(); waiting != ok || !until.Equal(at) || waiting && g <= st.serving {
			t.Fatalf("%s: Waiting: group %d until %s (%v), NextCheck %s (%v), serving %d", what, g, until.Sub(t0), waiting, at.Sub(t0), ok, st.serving)
		}
	}
}

// flap returns steps from start, every period, that alternate group up with it down beside the
// others (which stay healthy), checking that serving never changes.
func flap(start, period time.Duration, count int, group uint8, others []uint8, serving uint8) []failStep {
	var steps []failStep
	for i := range count {
		healthy := others
		if i%2 == 0 {
			healthy = append([]uint8{group}, others...)
		}
		steps = append(steps, failStep{at: start + time.Duration(i)*period, healthy: healthy, serving: serving})
	}
	return steps
}

func concat(parts ...[]failStep) []failStep {
	var all []failStep
	for _, p := range parts {
		all = append(all, p...)
	}
	return all
}

func TestFailover(t *testing.T) {
	const s = time.Second
	two := groupsOf(200, 100)
	preempt := Preemption{}
	never := Preemption{Never: true}
	delay := Preemption{Delay: 2 * s}
	start200 := failStep{at: 0, healthy: []uint8{200, 100}, serving: 200, sw: "0 -> 200: group 200 is the highest group with a healthy backend"}

	tests := []struct {
		name   string
		groups Groups
		pre    Preemption
		steps  []failStep
	}{
		{"preempt: primary down, standby serves, primary back", two, preempt, []failStep{
			start200,
			{at: 1 * s, healthy: []uint8{100}, serving: 100, sw: "200 -> 100: group 200 has no healthy backend"},
			{at: 2 * s, healthy: []uint8{100}, serving: 100},
			{at: 3 * s, healthy: []uint8{200, 100}, serving: 200, sw: "100 -> 200: group 200 healthy again"},
		}},
		{"preempt: standby comes up while primary is down", two, preempt, []failStep{
			{at: 0, healthy: []uint8{200}, serving: 200, sw: "0 -> 200: group 200 is the highest group with a healthy backend"},
			{at: 1 * s, healthy: nil, serving: 0, sw: "200 -> 0: group 200 has no healthy backend"},
			{at: 2 * s, healthy: []uint8{100}, serving: 100, sw: "0 -> 100: group 100 healthy again"},
			{at: 3 * s, healthy: []uint8{200, 100}, serving: 200, sw: "100 -> 200: group 200 healthy again"},
		}},
		{"preempt: the standby's health does not matter while the primary serves", two, preempt, []failStep{
			start200,
			{at: 1 * s, healthy: []uint8{200}, serving: 200},
			{at: 2 * s, healthy: []uint8{200, 100}, serving: 200},
		}},
		{"nopreempt: flapping primary never takes back, until the standby empties", two, never, concat(
			[]failStep{
				start200,
				{at: 1 * s, healthy: []uint8{100}, serving: 100, sw: "200 -> 100: group 200 has no healthy backend"},
			},
			flap(2*s, 300*time.Millisecond, 20, 200, []uint8{100}, 100),
			[]failStep{
				{at: 9 * s, healthy: []uint8{200, 100}, serving: 100},
				{at: 10 * s, healthy: []uint8{200}, serving: 200, sw: "100 -> 200: group 100 has no healthy backend"},
			},
		)},
		{"nopreempt: at start the highest healthy group serves", two, never, []failStep{
			{at: 0, healthy: []uint8{100}, serving: 100, sw: "0 -> 100: group 100 is the highest group with a healthy backend"},
			{at: 1 * s, healthy: []uint8{200, 100}, serving: 100},
		}},
		{"nopreempt: after all down the highest healthy group serves", two, never, []failStep{
			start200,
			{at: 1 * s, healthy: nil, serving: 0, sw: "200 -> 0: group 200 has no healthy backend"},
			{at: 2 * s, healthy: []uint8{200, 100}, serving: 200, sw: "0 -> 200: group 200 healthy again"},
		}},
		{"preempt_delay: a failure during the wait restarts it", two, delay, []failStep{
			start200,
			{at: 1 * s, healthy: []uint8{100}, serving: 100, sw: "200 -> 100: group 200 has no healthy backend"},
			{at: 2 * s, healthy: []uint8{200, 100}, serving: 100, next: 4 * s},
			{at: 3 * s, healthy: []uint8{100}, serving: 100},
			{at: 3500 * time.Millisecond, healthy: []uint8{200, 100}, serving: 100, next: 5500 * time.Millisecond},
			// The timer armed for the first wait fires: too early now.
			{at: 4 * s, healthy: []uint8{200, 100}, serving: 100, next: 5500 * time.Millisecond},
			{at: 5499 * time.Millisecond, healthy: []uint8{200, 100}, serving: 100, next: 5500 * time.Millisecond},
			{at: 5500 * time.Millisecond, healthy: []uint8{200, 100}, serving: 200, sw: "100 -> 200: group 200 healthy for 2s (preempt_delay)"},
			{at: 6 * s, healthy: []uint8{200, 100}, serving: 200},
		}},
		{"preempt_delay: a primary flapping every 300ms never takes back", two, Preemption{Delay: s}, concat(
			[]failStep{
				start200,
				{at: 1 * s, healthy: []uint8{100}, serving: 100, sw: "200 -> 100: group 200 has no healthy backend"},
			},
			[]failStep{
				{at: 2 * s, healthy: []uint8{200, 100}, serving: 100, next: 3 * s},
				{at: 2300 * time.Millisecond, healthy: []uint8{100}, serving: 100},
				{at: 2600 * time.Millisecond, healthy: []uint8{200, 100}, serving: 100, next: 3600 * time.Millisecond},
				{at: 2900 * time.Millisecond, healthy: []uint8{100}, serving: 100},
				{at: 3 * s, healthy: []uint8{100}, serving: 100}, // the first timer, late and useless
				{at: 3200 * time.Millisecond, healthy: []uint8{200, 100}, serving: 100, next: 4200 * time.Millisecond},
				{at: 4200 * time.Millisecond, healthy: []uint8{200, 100}, serving: 200, sw: "100 -> 200: group 200 healthy for 1s (preempt_delay)"},
			},
		)},
		{"preempt_delay: the serving group empties during the wait: the waiting higher group takes over at once", two, delay, []failStep{
			{at: 0, healthy: []uint8{100}, serving: 100, sw: "0 -> 100: group 100 is the highest group with a healthy backend"},
			{at: 1 * s, healthy: []uint8{200, 100}, serving: 100, next: 3 * s},
			{at: 2 * s, healthy: []uint8{200}, serving: 200, sw: "100 -> 200: group 100 has no healthy backend"},
		}},
		{"preempt_delay: recovery from all down is at once", two, delay, []failStep{
			start200,
			{at: 1 * s, healthy: nil, serving: 0, sw: "200 -> 0: group 200 has no healthy backend"},
			{at: 2 * s, healthy: []uint8{100}, serving: 100, sw: "0 -> 100: group 100 healthy again"},
			{at: 2500 * time.Millisecond, healthy: []uint8{200, 100}, serving: 100, next: 4500 * time.Millisecond},
		}},
		{"all down at start, then recovery", two, preempt, []failStep{
			{at: 0, healthy: nil, serving: 0},
			{at: 1 * s, healthy: nil, serving: 0},
			{at: 2 * s, healthy: []uint8{100}, serving: 100, sw: "0 -> 100: group 100 healthy again"},
			{at: 3 * s, healthy: nil, serving: 0, sw: "100 -> 0: group 100 has no healthy backend"},
			{at: 4 * s, healthy: []uint8{200, 100}, serving: 200, sw: "0 -> 200: group 200 healthy again"},
		}},
		{"three groups: down to the last and back up", groupsOf(250, 150, 50), preempt, []failStep{
			{at: 0, healthy: []uint8{250, 150, 50}, serving: 250, sw: "0 -> 250: group 250 is the highest group with a healthy backend"},
			{at: 1 * s, healthy: []uint8{150, 50}, serving: 150, sw: "250 -> 150: group 250 has no healthy backend"},
			{at: 2 * s, healthy: []uint8{50}, serving: 50, sw: "150 -> 50: group 150 has no healthy backend"},
			{at: 3 * s, healthy: []uint8{250, 50}, serving: 250, sw: "50 -> 250: group 250 healthy again"},
			{at: 4 * s, healthy: []uint8{150, 50}, serving: 150, sw: "250 -> 150: group 250 has no healthy backend"},
			{at: 5 * s, healthy: []uint8{250, 150, 50}, serving: 250, sw: "150 -> 250: group 250 healthy again"},
		}},
		{"three groups: a skipped group", groupsOf(250, 150, 50), preempt, []failStep{
			{at: 0, healthy: []uint8{250, 50}, serving: 250, sw: "0 -> 250: group 250 is the highest group with a healthy backend"},
			{at: 1 * s, healthy: []uint8{50}, serving: 50, sw: "250 -> 50: group 250 has no healthy backend"},
			{at: 2 * s, healthy: []uint8{150, 50}, serving: 150, sw: "50 -> 150: group 150 healthy again"},
		}},
		{"three groups with preempt_delay: each higher group takes back when its own wait ends", groupsOf(250, 150, 50), Preemption{Delay: s}, []failStep{
			{at: 0, healthy: []uint8{50}, serving: 50, sw: "0 -> 50: group 50 is the highest group with a healthy backend"},
			{at: 1 * s, healthy: []uint8{150, 50}, serving: 50, next: 2 * s},
			{at: 1500 * time.Millisecond, healthy: []uint8{250, 150, 50}, serving: 50, next: 2 * s},
			{at: 2 * s, healthy: []uint8{250, 150, 50}, serving: 150, sw: "50 -> 150: group 150 healthy for 1s (preempt_delay)", next: 2500 * time.Millisecond},
			{at: 2500 * time.Millisecond, healthy: []uint8{250, 150, 50}, serving: 250, sw: "150 -> 250: group 250 healthy for 1s (preempt_delay)"},
		}},
		{"three groups with preempt_delay: a late check lets the highest ready group take back at once", groupsOf(250, 150, 50), Preemption{Delay: s}, []failStep{
			{at: 0, healthy: []uint8{50}, serving: 50, sw: "0 -> 50: group 50 is the highest group with a healthy backend"},
			{at: 1 * s, healthy: []uint8{250, 150, 50}, serving: 50, next: 2 * s},
			{at: 3 * s, healthy: []uint8{250, 150, 50}, serving: 250, sw: "50 -> 250: group 250 healthy for 1s (preempt_delay)"},
		}},
		{"groups that are not configured are ignored", two, preempt, []failStep{
			{at: 0, healthy: []uint8{255, 100}, serving: 100, sw: "0 -> 100: group 100 is the highest group with a healthy backend"},
			{at: 1 * s, healthy: []uint8{255}, serving: 0, sw: "100 -> 0: group 100 has no healthy backend"},
		}},
		{"fail-back command after a nopreempt failover", two, never, []failStep{
			start200,
			{at: 1 * s, healthy: []uint8{100}, serving: 100, sw: "200 -> 100: group 200 has no healthy backend"},
			{failBack: true, serving: 100}, // the primary is still down: nothing to fail back to
			{at: 2 * s, healthy: []uint8{200, 100}, serving: 100},
			{failBack: true, serving: 200, sw: "100 -> 200: fail-back command"},
			{failBack: true, serving: 200},
			{at: 3 * s, healthy: []uint8{200, 100}, serving: 200},
		}},
		{"fail-back command cuts a preempt_delay wait short", two, delay, []failStep{
			start200,
			{at: 1 * s, healthy: []uint8{100}, serving: 100, sw: "200 -> 100: group 200 has no healthy backend"},
			{at: 2 * s, healthy: []uint8{200, 100}, serving: 100, next: 4 * s},
			{failBack: true, serving: 200, sw: "100 -> 200: fail-back command"},
			{at: 4 * s, healthy: []uint8{200, 100}, serving: 200},
		}},
		{"fail-back command while all down does nothing", two, preempt, []failStep{
			{at: 0, healthy: nil, serving: 0},
			{failBack: true, serving: 0},
		}},
		{"no group configured", Groups{}, preempt, []failStep{
			{at: 0, healthy: []uint8{100}, serving: 0},
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			runSteps(t, NewFailover(tc.groups, tc.pre), tc.steps)
		})
	}
}

func TestFailoverBeforeFirstUpdate(t *testing.T) {
	f := NewFailover(groupsOf(200, 100), Preemption{Delay: time.Second})
	if g, ok := f.Serving(); ok {
		t.Errorf("group %d serves before any verdict", g)
	}
	if f.AllDown() {
		t.Error("AllDown before any verdict: unknown is not down")
	}
	if _, ok := f.NextCheck(); ok {
		t.Error("a check is due before any verdict")
	}
	if sw := f.FailBack(); sw.Changed() {
		t.Errorf("FailBack before any verdict switched: %v", sw)
	}
	if f.Highest() != 200 || f.Groups() != groupsOf(200, 100) {
		t.Errorf("Highest %d, Groups %v", f.Highest(), f.Groups())
	}
}

func TestFailoverCarryOver(t *testing.T) {
	const s = time.Second
	two := groupsOf(200, 100)

	// A nopreempt failover to the standby, with the primary healthy again.
	failedOver := func(pre Preemption) *Failover {
		f := NewFailover(two, pre)
		f.Update(two, t0)
		f.Update(groupsOf(100), t0.Add(1*s))
		f.Update(two, t0.Add(2*s))
		return f
	}

	t.Run("same groups keep the standby serving", func(t *testing.T) {
		f := NewFailover(two, Preemption{Never: true})
		if !f.CarryOver(failedOver(Preemption{Never: true})) {
			t.Fatal("CarryOver refused the same groups")
		}
		runSteps(t, f, []failStep{
			{at: 3 * s, healthy: []uint8{200, 100}, serving: 100},
			{at: 4 * s, healthy: []uint8{200}, serving: 200, sw: "100 -> 200: group 100 has no healthy backend"},
		})
	})
	t.Run("a running preempt_delay wait goes on", func(t *testing.T) {
		f := NewFailover(two, Preemption{Delay: 2 * s})
		if !f.CarryOver(failedOver(Preemption{Delay: 2 * s})) {
			t.Fatal("CarryOver refused the same groups")
		}
		if at, ok := f.NextCheck(); !ok || !at.Equal(t0.Add(4*s)) {
			t.Fatalf("NextCheck %s (%v) after carry-over, want the old wait's end at 4s", at.Sub(t0), ok)
		}
		runSteps(t, f, []failStep{
			{at: 3 * s, healthy: []uint8{200, 100}, serving: 100, next: 4 * s},
			{at: 4 * s, healthy: []uint8{200, 100}, serving: 200, sw: "100 -> 200: group 200 healthy for 2s (preempt_delay)"},
		})
	})
	t.Run("a reload to preempt takes back at the next update", func(t *testing.T) {
		f := NewFailover(two, Preemption{})
		if !f.CarryOver(failedOver(Preemption{Never: true})) {
			t.Fatal("CarryOver refused the same groups")
		}
		if g, _ := f.Serving(); g != 100 {
			t.Fatalf("serving %d right after carry-over, want the old 100", g)
		}
		runSteps(t, f, []failStep{
			{at: 3 * s, healthy: []uint8{200, 100}, serving: 200, sw: "100 -> 200: group 200 has a healthy backend (preempt)"},
		})
	})
	t.Run("different groups start afresh", func(t *testing.T) {
		f := NewFailover(groupsOf(200, 100, 50), Preemption{Never: true})
		if f.CarryOver(failedOver(Preemption{Never: true})) {
			t.Fatal("CarryOver took the state of other groups")
		}
		runSteps(t, f, []failStep{
			{at: 3 * s, healthy: []uint8{200, 100}, serving: 200, sw: "0 -> 200: group 200 is the highest group with a healthy backend"},
		})
	})
	t.Run("nothing to carry", func(t *testing.T) {
		f := NewFailover(two, Preemption{})
		if f.CarryOver(nil) || f.CarryOver(NewFailover(two, Preemption{})) || f.CarryOver(f) {
			t.Fatal("CarryOver took a state from nil, an unstarted Failover or itself")
		}
	})
	t.Run("the old state is copied, not shared", func(t *testing.T) {
		old := failedOver(Preemption{Delay: 2 * s})
		f := NewFailover(two, Preemption{Delay: 2 * s})
		f.CarryOver(old)
		old.Update(groupsOf(100), t0.Add(3*s)) // the old pool's last rebuild, racing the reload
		if at, ok := f.NextCheck(); !ok || !at.Equal(t0.Add(4*s)) {
			t.Fatalf("the old Failover's update changed the new one: NextCheck %s (%v)", at.Sub(t0), ok)
		}
		f.Update(two, t0.Add(4*s))
		if g, _ := f.Serving(); g != 200 {
			t.Fatalf("serving %d, want 200 after the carried wait", g)
		}
	})
}

// TestFailoverConcurrent runs the pool's updates beside an operator's commands and a status
// page's reads, for the race detector.
func TestFailoverConcurrent(t *testing.T) {
	f := NewFailover(groupsOf(200, 100), Preemption{Delay: time.Millisecond})
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := range 1000 {
			h := groupsOf(100)
			if i%3 == 0 {
				h.Add(200)
			}
			f.Update(h, t0.Add(time.Duration(i)*time.Millisecond))
		}
	})
	wg.Go(func() {
		for range 1000 {
			f.FailBack()
			f.NextCheck()
		}
	})
	wg.Go(func() {
		next := NewFailover(groupsOf(200, 100), Preemption{})
		for range 1000 {
			f.Serving()
			f.AllDown()
			_ = strings.Contains(f.Healthy().String(), "200")
			next.CarryOver(f)
		}
	})
	wg.Wait()
}

// TestFailoverAdoptAndSetGroups: a group agreed elsewhere is adopted only where it has a healthy
// backend, and nopreempt then keeps it; a list that drops the serving group moves the serving
// group at the next Update.
func TestFailoverAdoptAndSetGroups(t *testing.T) {
	const s = time.Second
	f := NewFailover(groupsOf(200, 100), Preemption{Never: true})
	if sw := f.Adopt(100, "agreed"); sw.Changed() {
		t.Errorf("adopted before any verdict: %v", sw)
	}
	f.Update(groupsOf(200), t0)
	if sw := f.Adopt(100, "agreed"); sw.Changed() {
		t.Errorf("adopted a group with no healthy backend: %v", sw)
	}
	f.Update(groupsOf(200, 100), t0.Add(s))
	if sw := f.Adopt(100, "agreed"); sw != (Switch{200, 100, "agreed"}) {
		t.Errorf("Adopt(100) = %v, want 200 -> 100", sw)
	}
	if sw := f.Update(groupsOf(200, 100), t0.Add(2*s)); sw.Changed() {
		t.Errorf("nopreempt took back an adopted group: %v", sw)
	}
	f.SetGroups(groupsOf(200, 50))
	if f.Healthy() != groupsOf(200) {
		t.Errorf("healthy %v after group 100 left the list, want 200 alone", f.Healthy())
	}
	if sw := f.Update(groupsOf(200, 50), t0.Add(3*s)); sw.From != 100 || sw.To != 200 {
		t.Errorf("after the serving group left the list: %v, want 100 -> 200", sw)
	}
}

// Waiting names the group whose preempt_delay wait ends first, which is the one that takes back
// then; a higher group that came back later waits on, and is named next.
func TestFailoverWaiting(t *testing.T) {
	const s = time.Second
	f := NewFailover(groupsOf(250, 200, 100), Preemption{Delay: 5 * s})
	f.Update(groupsOf(100), t0)
	f.Update(groupsOf(200, 100), t0.Add(1*s))
	f.Update(groupsOf(250, 200, 100), t0.Add(2*s))
	if g, until, ok := f.Waiting(); !ok || g != 200 || !until.Equal(t0.Add(6*s)) {
		t.Fatalf("waiting: group %d until %s (%v), want 200 until 6s", g, until.Sub(t0), ok)
	}
	if sw := f.Update(groupsOf(250, 200, 100), t0.Add(6*s)); sw.To != 200 {
		t.Fatalf("at 6s: %+v, want group 200 to take back", sw)
	}
	if g, until, ok := f.Waiting(); !ok || g != 250 || !until.Equal(t0.Add(7*s)) {
		t.Fatalf("waiting: group %d until %s (%v), want 250 until 7s", g, until.Sub(t0), ok)
	}

	never := NewFailover(groupsOf(200, 100), Preemption{Never: true})
	never.Update(groupsOf(100), t0)
	never.Update(groupsOf(200, 100), t0.Add(1*s))
	if g, _, ok := never.Waiting(); ok {
		t.Errorf("nopreempt waits for group %d; it waits for no one", g)
	}
}
