package wire

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"time"
)

// MaxExecRunning bounds the scripts of one registry that run at once. A probe whose script
// cannot start because that many run already fails at once, rather than waiting in a queue that
// would make its result late and the next probes later still.
const MaxExecRunning = 32

// execReasonLen bounds the first line of a script's output that a failure reports.
const execReasonLen = 256

// ExecSlots are the runs of scripts a registry allows at once.
type ExecSlots chan struct{}

// NewExecSlots returns MaxExecRunning slots.
func NewExecSlots() ExecSlots { return make(ExecSlots, MaxExecRunning) }

// ExecSpec is a script check, as the Corefile gives it (Keepalived's track_script).
type ExecSpec struct {
	Path string
	Args []string // "{backend}" in an argument becomes the backend's address
}

// Name is the check as logs and metrics name it: "exec /usr/local/bin/check-db".
func (s ExecSpec) Name() string { return "exec " + s.Path }

// Exec returns a blocking check that runs the script directly, never through a shell, with the
// backend's address in HEALTHDNS_BACKEND and in place of {backend} in its arguments. Exit 0
// passes; anything else fails with the first line of the script's output as the reason. When
// ctx ends first, the script's whole process group is killed, so that nothing it started
// outlives the probe.
func Exec(spec ExecSpec, slots ExecSlots) func(ctx context.Context, addr netip.Addr) error {
	name := spec.Name()
	return func(ctx context.Context, addr netip.Addr) error {
		select {
		case slots <- struct{}{}:
			defer func() { <-slots }()
		default:
			return fmt.Errorf("%s: %w: %d checks already running", name, errExecBusy, cap(slots))
		}
		args := make([]string, len(spec.Args))
		for i, a := range spec.Args {
			args[i] = strings.ReplaceAll(a, "{backend}", addr.String())
		}
		cmd := exec.CommandContext(ctx, spec.Path, args...)
		cmd.Env = append(os.Environ(), "HEALTHDNS_BACKEND="+addr.String())
		out := &firstLine{}
		cmd.Stdout, cmd.Stderr = out, out
		inOwnGroup(cmd) // Cancel kills the group
		cmd.WaitDelay = time.Second
		err := cmd.Run()
		if err == nil {
			return nil
		}
		var exit *exec.ExitError
		if errors.As(err, &exit) && ctx.Err() == nil {
			return fmt.Errorf("%s: %w", name, exitError{exitStatus(exit), out.String()})
		}
		if ctx.Err() != nil {
			return fmt.Errorf("%s: %w", name, ctx.Err())
		}
		return fmt.Errorf("%s: %w", name, err) // it would not start
	}
}

// errExecBusy is a script that could not start because MaxExecRunning run already.
var errExecBusy = errors.New("not run")

// exitError is a script that ended with a status other than 0, and the first line it wrote.
type exitError struct{ status, line string }

func (e exitError) Error() string {
	if e.line == "" {
		return e.status
	}
	return e.status + ": " + e.line
}

// exitStatus says how a script ended: "exit 1", or "killed by signal 9".
func exitStatus(e *exec.ExitError) string {
	if code := e.ExitCode(); code >= 0 {
		return fmt.Sprintf("exit %d", code)
	}
	return strings.TrimPrefix(e.String(), "signal: ") // "killed", "terminated"
}

// firstLine keeps the first line of what a script writes, at most execReasonLen bytes, and
// takes the rest without keeping it.
type firstLine struct {
	buf  bytes.Buffer
	done bool
}

func (f *firstLine) Write(p []byte) (int, error) {
	if !f.done {
		line := p
		if i := bytes.IndexByte(p, '\n'); i >= 0 {
			line, f.done = p[:i], true
		}
		if room := execReasonLen - f.buf.Len(); len(line) > room {
			line, f.done = line[:room], true
		}
		f.buf.Write(line)
	}
	return len(p), nil
}

func (f *firstLine) String() string { return strings.TrimSpace(f.buf.String()) }
