//go:build !unix && !windows

package wire

import (
	"os"
	"os/exec"
)

// ScriptPATH is empty where there is no convention to follow.
const ScriptPATH = ""

// Executable accepts any file: there is no execute bit to look at.
func Executable(os.FileInfo) bool { return true }

// inOwnGroup leaves cmd as it is: without process groups, cancellation kills the script alone.
func inOwnGroup(*exec.Cmd) {}

// ScriptSafe checks nothing where there is no root to guard.
func ScriptSafe(string) error { return nil }

// runScript runs cmd: without process groups, what the script starts is left to it.
func runScript(cmd *exec.Cmd) error { return cmd.Run() }
