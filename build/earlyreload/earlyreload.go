// Package earlyreload catches SIGUSR1 from the start of package initialisation.
package earlyreload

import (
	"os"
	"os/signal"
	"syscall"
)

// Caught receives the SIGUSR1s that arrive from this package's initialisation on.
var Caught = make(chan os.Signal, 1)

func init() { signal.Notify(Caught, syscall.SIGUSR1) }
