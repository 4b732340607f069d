//go:build unix && !linux

package wire

import (
	"os/exec"
	"syscall"
)

// runScript runs cmd, started by inOwnGroup in a process group of its own, and then kills what
// is left of its group, as on Linux. Without waitid's WNOWAIT the script is reaped first, and its
// pid, its group's id, is free again while its group is empty: the kill could reach a group that
// took the same id in between.
func runScript(cmd *exec.Cmd) error {
	err := cmd.Run()
	if cmd.Process != nil {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
	return err
}
