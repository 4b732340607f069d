package wire

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// runScript runs cmd, started by inOwnGroup in a process group of its own, without the
// capabilities CoreDNS holds; once the script has ended it kills what is left of its group and
// reaps what of it this process inherited.
//
// The group is killed after every run, not only at a timeout: a script that starts `sleep 301 &`
// and exits 0 would otherwise leave a process behind at every probe, until the host or the
// unit's TasksMax has no more (and every later probe fails to fork). It is killed between the
// script's end and its reaping: until Wait reaps it, the script's pid, which is its group's id,
// cannot be given to another process, so the kill reaches this group and no other.
func runScript(cmd *exec.Cmd) error {
	if err := startWithoutCapabilities(cmd); err != nil {
		return err
	}
	pid := cmd.Process.Pid
	var info unix.Siginfo
	for { // WNOWAIT: the script stays to be reaped by Wait
		if err := unix.Waitid(unix.P_PID, pid, &info, unix.WEXITED|unix.WNOWAIT, nil); !errors.Is(err, unix.EINTR) {
			break
		}
	}
	syscall.Kill(-pid, syscall.SIGKILL) // ESRCH: the script left nothing
	err := cmd.Wait()
	reapGroup(pid)
	return err
}

// startWithoutCapabilities starts cmd with an empty ambient capability set.
//
// The shipped unit gives CoreDNS CAP_NET_BIND_SERVICE and CAP_NET_RAW as ambient capabilities
// (it runs as a user without them otherwise), and an ambient capability passes across execve
// into the permitted and effective sets of a program that has no file capabilities: a script
// would get a raw socket. Clearing the ambient set leaves the permitted and effective sets as
// they are (capabilities(7), PR_CAP_AMBIENT_CLEAR_ALL; the test checks it), so CoreDNS keeps
// port 53 and its raw sockets.
//
// Capabilities belong to a thread, not to the process, and a child inherits those of the thread
// that forks it: the set is cleared on the thread this goroutine is locked to, which cmd.Start
// forks from. The thread goes back to the runtime without its ambient set, which nothing in
// CoreDNS runs with. Its inheritable set stays: it reaches a script only through file
// capabilities, which only root can set and which the unit's NoNewPrivileges ignores (and
// capset, which would clear it, is in the @privileged system calls the unit refuses).
func startWithoutCapabilities(cmd *exec.Cmd) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	// EINVAL: a kernel older than 4.3, which has no ambient capabilities to pass on.
	if err := unix.Prctl(unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0); err != nil && !errors.Is(err, unix.EINVAL) {
		return fmt.Errorf("clearing ambient capabilities before starting it: %w", err)
	}
	return cmd.Start()
}

// groupReapTime bounds how long reapGroup waits for killed processes to die and be inherited.
const groupReapTime = 5 * time.Second

// reapGroup reaps the processes of the killed group pgid that became this process's children.
// As PID 1 (a container without an init) or as a subreaper, CoreDNS inherits what a script
// leaves running; killed and never reaped, each stays a zombie holding a pid. A killed
// grandchild becomes ours only once its parent has died, and a process stuck in the kernel dies
// late, so the group is polled until it is empty, for at most groupReapTime, never blocking on
// one. Anywhere else the killed processes are init's to reap, and there is nothing to do.
func reapGroup(pgid int) {
	if !inheritsOrphans() {
		return
	}
	deadline := time.Now().Add(groupReapTime)
	for {
		var status syscall.WaitStatus
		pid, err := syscall.Wait4(-pgid, &status, syscall.WNOHANG, nil) // any child in the group
		switch {
		case pid > 0 || errors.Is(err, syscall.EINTR):
			continue
		case err != nil && !errors.Is(err, syscall.ECHILD):
			return
		}
		// Nothing of ours has ended yet, or nothing in the group is ours yet.
		if syscall.Kill(-pgid, 0) != nil || time.Now().After(deadline) {
			return
		}
		time.Sleep(time.Millisecond)
	}
}

// inheritsOrphans reports whether orphaned processes become this process's children.
func inheritsOrphans() bool {
	if os.Getpid() == 1 {
		return true
	}
	var subreaper int32
	_, _, errno := syscall.Syscall(syscall.SYS_PRCTL, unix.PR_GET_CHILD_SUBREAPER, uintptr(unsafe.Pointer(&subreaper)), 0)
	return errno == 0 && subreaper != 0
}
