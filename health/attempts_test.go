package health

import (
	"context"
	"errors"
	"net/netip"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// scriptedProber answers try n (from 0) with script[n]: nil or an error right away, or silence
// (errSilent) until the context ends.
type scriptedProber struct {
	script []error
	tries  atomic.Int32
}

var errSilent = errors.New("silent")

func (p *scriptedProber) Probe(ctx context.Context, _ netip.Addr) error {
	n := int(p.tries.Add(1)) - 1
	if n < len(p.script) && p.script[n] != errSilent {
		return p.script[n]
	}
	<-ctx.Done()
	return ctx.Err()
}

func TestAttempt(t *testing.T) {
	const timeout = 300 * time.Millisecond
	addr := netip.MustParseAddr("127.0.0.1")
	tests := []struct {
		name      string
		script    []error
		tries     int
		wantErr   error // nil: success
		wantTries int32
		fullTime  bool // the probe must last the whole timeout
	}{
		{"first answers", []error{nil}, 3, nil, 1, false},
		{"lost first packet", []error{errSilent, nil}, 3, nil, 2, false},
		{"only the last try answers", []error{errSilent, errSilent, nil}, 3, nil, 3, false},
		{"refused is an answer", []error{syscall.ECONNREFUSED}, 3, syscall.ECONNREFUSED, 1, false},
		{"refused after a lost packet", []error{errSilent, syscall.ECONNREFUSED}, 3, syscall.ECONNREFUSED, 2, false},
		{"all silent", []error{errSilent, errSilent, errSilent}, 3, context.DeadlineExceeded, 3, true},
		{"one try, silent", []error{errSilent, nil}, 1, context.DeadlineExceeded, 1, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := &scriptedProber{script: tc.script}
			ctx, cancel := context.WithTimeout(context.Background(), timeout)
			defer cancel()
			deadline, _ := ctx.Deadline()
			err := attempt(ctx, cancel, p, addr, tc.tries, newRetryBudget())
			// Against the context's own deadline: time lost before attempt started (a GC pause
			// on a busy CI host) must not count as giving up early.
			ended := time.Now()
			if tc.wantErr == nil && err != nil {
				t.Fatalf("attempt = %v, want success", err)
			}
			if tc.wantErr != nil && !errors.Is(err, tc.wantErr) {
				t.Fatalf("attempt = %v, want %v", err, tc.wantErr)
			}
			if got := p.tries.Load(); got != tc.wantTries {
				t.Errorf("%d tries made, want %d", got, tc.wantTries)
			}
			if tc.fullTime && ended.Before(deadline) {
				t.Errorf("gave up %v before the %v timeout ran out", deadline.Sub(ended), timeout)
			}
		})
	}
}

// A try that is still waiting keeps its chance: a reply to the first packet that arrives after
// the second was sent still passes the probe (jitter, not loss).
func TestAttemptLateReplyCounts(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	var tries atomic.Int32
	p := proberFunc(func(ctx context.Context, _ netip.Addr) error {
		if tries.Add(1) == 1 {
			select { // answers at 150ms, after the second try (100ms) went out
			case <-time.After(150 * time.Millisecond):
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		<-ctx.Done()
		return ctx.Err()
	})
	if err := attempt(ctx, cancel, p, netip.MustParseAddr("127.0.0.1"), 3, newRetryBudget()); err != nil {
		t.Fatalf("attempt = %v, want the late reply to count", err)
	}
	if got := tries.Load(); got != 2 {
		t.Errorf("%d tries, want 2 (the third was not due yet)", got)
	}
}

type proberFunc func(context.Context, netip.Addr) error

func (f proberFunc) Probe(ctx context.Context, a netip.Addr) error { return f(ctx, a) }

// An empty budget sends no second try: the slow first try is all the probe gets.
func TestAttemptBudgetSpent(t *testing.T) {
	budget := newRetryBudget()
	budget.tokens = 0
	budget.last = time.Now().Add(time.Hour) // no refill during the test
	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Millisecond)
	defer cancel()
	p := &scriptedProber{script: []error{errSilent, nil}}
	if err := attempt(ctx, cancel, p, netip.MustParseAddr("127.0.0.1"), 3, budget); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("attempt = %v, want a timeout: the budget had no try to spare", err)
	}
	if got := p.tries.Load(); got != 1 {
		t.Errorf("%d tries, want 1", got)
	}
}

func TestRetryBudget(t *testing.T) {
	b := newRetryBudget()
	b.tokens, b.last = 0, time.Now()
	if b.withdraw() {
		t.Fatal("withdrew from an empty budget")
	}
	for i := 0; i < 5; i++ { // five probes earn one try
		b.deposit()
	}
	if !b.withdraw() {
		t.Fatal("five probes did not earn a try")
	}
	b.tokens, b.last = 0, time.Now().Add(-time.Second) // a second earns retryFloor tries
	for i := 0; i < int(retryFloor); i++ {
		if !b.withdraw() {
			t.Fatalf("try %d of a second's floor refused", i+1)
		}
	}
	b.tokens, b.last = retryCap, time.Now().Add(-time.Hour)
	b.deposit()
	b.withdraw()
	if b.tokens > retryCap {
		t.Errorf("balance %v above the cap %v", b.tokens, retryCap)
	}
}
