package harness

import (
	"fmt"
	"testing"
	"time"
)

// Eventually polls cond every 25ms until it is true, or fails the test after timeout.
func Eventually(t testing.TB, timeout time.Duration, cond func() bool, what ...any) {
	t.Helper()
	if !Poll(timeout, 25*time.Millisecond, cond) {
		t.Fatalf("timed out after %s waiting for %s", timeout, fmt.Sprint(what...))
	}
}

// Poll calls cond every interval until it is true or timeout has passed, and reports whether it
// became true.
func Poll(timeout, every time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(every)
	}
	return true
}
