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
	buf := &Output{}
	golog.SetOutput(buf)
	flags := golog.Flags()
	golog.SetFlags(0)
	t.Cleanup(func() { golog.SetOutput(os.Stderr); golog.SetFlags(flags) })
	return func() []string { return strings.Split(buf.String(), "\n") }
}

// Output is what a logger or a process writes while a test reads it.
type Output struct {
	mu sync.Mutex
	b  strings.Builder
}

func (o *Output) Write(p []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.b.Write(p)
}

// String is what was written so far, without the blanks around it.
func (o *Output) String() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return strings.TrimSpace(o.b.String())
}
