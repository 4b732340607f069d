//go:build unix

package earlyreload

import (
	"os/signal"
	"syscall"
)

func init() { signal.Notify(Caught, syscall.SIGUSR1) }
