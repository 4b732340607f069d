package engine

import (
	"testing"
	"time"
)

func TestBudget(t *testing.T) {
	b := NewBudget()
	b.tokens, b.last = 0, time.Now()
	if b.Withdraw() {
		t.Fatal("withdrew from an empty budget")
	}
	for range 5 { // five probes earn one try
		b.Deposit()
	}
	if !b.Withdraw() {
		t.Fatal("five probes did not earn a try")
	}
	b.tokens, b.last = 0, time.Now().Add(-time.Second) // a second earns retryFloor tries
	for i := range int(retryFloor) {
		if !b.Withdraw() {
			t.Fatalf("try %d of a second's floor refused", i+1)
		}
	}
	b.tokens, b.last = retryCap, time.Now().Add(-time.Hour)
	b.Deposit()
	b.Withdraw()
	if b.tokens > retryCap {
		t.Errorf("balance %v above the cap %v", b.tokens, retryCap)
	}
}
