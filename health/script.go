package health

import (
	"context"

	"github.com/healthdns/healthdns/health/internal/wire"
)

// RunScript runs path with args, as an exec check runs its script: directly, never through a
// shell, with a PATH of the system's directories and env as its only environment, stdin (nil
// for none) on its standard input, and no capabilities. It fails with the exit status and the
// first line of the script's output, or with ctx's error once ctx ends; either way the whole
// process group (on Windows the job) is killed when the script ends, so that nothing it
// started outlives the run. Notify exec (package notify) runs its scripts with it.
func RunScript(ctx context.Context, path string, args, env []string, stdin []byte) error {
	return wire.Run(ctx, wire.Script{Path: path, Args: args, Env: env, Stdin: stdin})
}

// ValidateScript reports what would keep path from running as a script: as for an exec check
// (Check.Validate), a missing file, one that is not executable, or (running as root) one that
// someone else can change.
func ValidateScript(path string) error {
	return Check{Kind: Exec, Command: path}.Validate()
}
