package engine

import (
	"context"
	"errors"
	"testing"
	"time"
)

// Turns are given first come first served; a raised limit lets waiting tries run at once; a
// try that gives up waiting leaves the queue without a turn; every wait is counted.
func TestTurns(t *testing.T) {
	turns := NewTurns(1)
	ctx := context.Background()
	if err := turns.Take(ctx); err != nil {
		t.Fatal(err)
	}
	order := make(chan int, 3)
	for i := range 3 {
		go func() {
			if err := turns.Take(ctx); err != nil {
				t.Error(err)
				return
			}
			order <- i
		}()
		waitUntil(t, func() bool { return turns.Stats().Waiting == i+1 }) // queued in this order
	}
	gaveUp := make(chan error)
	cancelled, cancel := context.WithCancel(ctx)
	go func() { gaveUp <- turns.Take(cancelled) }()
	waitUntil(t, func() bool { return turns.Stats().Waiting == 4 })
	cancel()
	if err := <-gaveUp; !errors.Is(err, context.Canceled) {
		t.Errorf("a cancelled wait returned %v", err)
	}
	if st := turns.Stats(); st.Waiting != 3 || st.Running != 1 {
		t.Errorf("after a cancelled wait: %+v, want 3 waiting and 1 running", st)
	}

	for want := range 2 {
		turns.Give() // the holder's, then the first waiter's
		if got := <-order; got != want {
			t.Errorf("turn given to the try queued %d-th, want the %d-th", got+1, want+1)
		}
	}
	turns.SetLimit(2) // the last one waiting runs beside the second
	if got := <-order; got != 2 {
		t.Errorf("raised limit gave a turn to the try queued %d-th, want the third", got+1)
	}
	st := turns.Stats()
	if st.Running != 2 || st.Waiting != 0 || st.Waits != 3 || st.Waited <= 0 || st.Limit != 2 {
		t.Errorf("stats %+v, want 2 running, none waiting, 3 waits counted (not the cancelled one)", st)
	}
	for range 2 {
		turns.Give()
	}
	if err := turns.Take(ctx); err != nil || turns.Stats().Waits != 3 {
		t.Errorf("a free turn: %v, waits %d; want it at once, not counted as a wait", err, turns.Stats().Waits)
	}
}

// A lowered limit lets the tries running finish, and starts none until fewer run.
func TestTurnsLowered(t *testing.T) {
	turns := NewTurns(2)
	ctx := context.Background()
	turns.Take(ctx)
	turns.Take(ctx)
	turns.SetLimit(1)
	took := make(chan struct{})
	go func() { turns.Take(ctx); close(took) }()
	waitUntil(t, func() bool { return turns.Stats().Waiting == 1 })
	turns.Give() // one still runs: the limit is reached
	select {
	case <-took:
		t.Fatal("a turn given beyond a lowered limit")
	case <-time.After(50 * time.Millisecond):
	}
	turns.Give()
	<-took
}

func waitUntil(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 10s")
		}
		time.Sleep(time.Millisecond)
	}
}
