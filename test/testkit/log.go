package testkit

import (
	golog "log"
	"os"
	"strings"
	"sync"
	"testing"
)

// LogLines captures what the process logs through the standard logger (CoreDNS's plugin logs
// go there) until the test ends, and returns a function that reads the lines so far.
func LogLines(t testing.TB) func() []string {
	t.Helper()
	buf := &lockedBuffer{}
	golog.SetOutput(buf)
	flags := golog.Flags()
	golog.SetFlags(0)
	t.Cleanup(func() { golog.SetOutput(os.Stderr); golog.SetFlags(flags) })
	return func() []string {
		buf.mu.Lock()
		defer buf.mu.Unlock()
		return strings.Split(strings.TrimSpace(buf.b.String()), "\n")
	}
}

type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}
