package source

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain checks that no test of the package leaves a goroutine behind: a watch that outlives
// its context would leak one per pool and reload.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
