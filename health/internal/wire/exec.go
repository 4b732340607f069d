package wire

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os/exec"
	"strings"
	"time"
)

// execReasonLen bounds the first line of a script's output that a failure reports.
const execReasonLen = 256

// ExecSpec is a script check, as the Corefile gives it (Keepalived's track_script).
type ExecSpec struct {
	Path string
	Args []string // "{backend}" in an argument becomes the backend's address
}

// Name is the check as logs and metrics name it: "exec /usr/local/bin/check-db".
func (s ExecSpec) Name() string { return "exec " + s.Path }

// Exec returns a blocking check that runs the script directly, never through a shell, with the
// backend's address in HEALTHDNS_BACKEND and in place of {backend} in its arguments, PATH
// set to ScriptPATH and no other environment, and no capabilities. Exit 0 passes; anything
// else fails with the first line of the script's output as the reason. When the script ends,
// or ctx ends first, its whole process group is killed, so that nothing it started outlives
// the probe. How many scripts run at once is bounded by the turns of their targets
// (engine.Target.Turns), which Blocking takes before it calls this.
func Exec(spec ExecSpec) func(ctx context.Context, addr netip.Addr) error {
	name := spec.Name()
	return func(ctx context.Context, addr netip.Addr) error {
		args := make([]string, len(spec.Args))
		for i, a := range spec.Args {
			args[i] = strings.ReplaceAll(a, "{backend}", addr.String())
		}
		if err := Run(ctx, Script{Path: spec.Path, Args: args, Env: []string{"HEALTHDNS_BACKEND=" + addr.String()}}); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		return nil
	}
}

// Script is one run of a program: a check's, or a notify exec's.
type Script struct {
	Path  string
	Args  []string // as given: no shell reads them
	Env   []string // NAME=value, beside PATH=ScriptPATH, which is all else it gets
	Stdin []byte   // nil for none
}

// Run runs s directly, never through a shell, with PATH set to ScriptPATH and s.Env as its
// only environment, and no capabilities. Exit 0 is nil; anything else fails with the first line
// of its output. When it ends, or ctx ends first, its whole process group (on Windows its job)
// is killed, so that nothing it started outlives the run.
func Run(ctx context.Context, s Script) error {
	cmd := exec.CommandContext(ctx, s.Path, s.Args...)
	cmd.Env = append([]string{"PATH=" + ScriptPATH}, s.Env...)
	if s.Stdin != nil {
		cmd.Stdin = bytes.NewReader(s.Stdin)
	}
	out := &firstLine{}
	cmd.Stdout, cmd.Stderr = out, out
	inOwnGroup(cmd) // Cancel kills the group
	cmd.WaitDelay = time.Second
	err := runScript(cmd)
	if err == nil {
		return nil
	}
	if errors.Is(err, exec.ErrWaitDelay) && ctx.Err() == nil && cmd.ProcessState != nil && cmd.ProcessState.Success() {
		// Exit 0 is the verdict. Its output was still open a second after it ended: a
		// child that left its process group holds it, or on a loaded host the reader was
		// late.
		return nil
	}
	var exit *exec.ExitError
	if errors.As(err, &exit) && ctx.Err() == nil {
		return exitError{exitStatus(exit), out.String()}
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return err // it would not start
}

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
