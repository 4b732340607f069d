// Package earlyreload catches SIGUSR1 from the start of package initialisation.
package earlyreload

import "os"

// Caught receives the SIGUSR1s that arrive from this package's initialisation on. Where there
// is no SIGUSR1 (Windows) nothing is ever sent on it.
var Caught = make(chan os.Signal, 1)
