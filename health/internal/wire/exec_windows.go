package wire

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"unsafe"

	"golang.org/x/sys/windows"
)

// ScriptPATH is the PATH a script runs with: Windows's own directories, where cmd.exe,
// powershell.exe and curl.exe are. os/exec adds SYSTEMROOT, without which Winsock does not start.
const ScriptPATH = `C:\Windows\System32;C:\Windows;C:\Windows\System32\WindowsPowerShell\v1.0`

// Executable reports whether CreateProcess runs the file: a program or a batch file, by its
// extension, as Windows decides (there is no execute bit).
func Executable(fi os.FileInfo) bool {
	switch strings.ToLower(filepath.Ext(fi.Name())) {
	case ".exe", ".com", ".bat", ".cmd":
		return true
	}
	return false
}

// inOwnGroup starts cmd suspended: runScript puts it in a job object of its own before it runs
// an instruction, so that everything it starts is in the job too, and ends the job when the
// script ends or the probe is cancelled. A job is Windows's process group; taskkill /T would
// miss the children whose parent has already exited.
func inOwnGroup(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{CreationFlags: windows.CREATE_SUSPENDED}
}

// ScriptSafe checks nothing on Windows: who may change a script is its ACL's to say.
func ScriptSafe(string) error { return nil }

// runScript runs cmd, started suspended by inOwnGroup, in a job object that is terminated once
// the script has ended (a script that starts a background process and exits 0 would otherwise
// leave one behind at every probe) or when ctx ends.
func runScript(cmd *exec.Cmd) error {
	job, err := newKillJob()
	if err != nil {
		return fmt.Errorf("creating its job object: %w", err)
	}
	// KILL_ON_JOB_CLOSE: should this process die, the job's processes die with its handle.
	defer windows.CloseHandle(job)
	cmd.Cancel = func() error { return windows.TerminateJobObject(job, 1) }
	if err := cmd.Start(); err != nil {
		return err
	}
	if err := enterJob(job, uint32(cmd.Process.Pid)); err != nil {
		cmd.Process.Kill()
		cmd.Wait()
		return err
	}
	err = cmd.Wait()
	windows.TerminateJobObject(job, 1)
	return err
}

func newKillJob() (windows.Handle, error) {
	job, err := windows.CreateJobObject(nil, nil)
	if err != nil {
		return 0, err
	}
	var limits windows.JOBOBJECT_EXTENDED_LIMIT_INFORMATION
	limits.BasicLimitInformation.LimitFlags = windows.JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE
	if _, err := windows.SetInformationJobObject(job, windows.JobObjectExtendedLimitInformation,
		uintptr(unsafe.Pointer(&limits)), uint32(unsafe.Sizeof(limits))); err != nil {
		windows.CloseHandle(job)
		return 0, err
	}
	return job, nil
}

// enterJob assigns the suspended process pid to job, then resumes its threads. Until the
// process is reaped its pid names it and no other, and os/exec reaps it only in Wait.
func enterJob(job windows.Handle, pid uint32) error {
	process, err := windows.OpenProcess(windows.PROCESS_SET_QUOTA|windows.PROCESS_TERMINATE, false, pid)
	if err != nil {
		return fmt.Errorf("opening process %d: %w", pid, err)
	}
	defer windows.CloseHandle(process)
	if err := windows.AssignProcessToJobObject(job, process); err != nil {
		return fmt.Errorf("putting process %d in its job object: %w", pid, err)
	}
	return resumeThreads(pid)
}

// resumeThreads resumes the threads of process pid. os/exec closes the thread handle that
// CreateProcess returns, so they are found in a snapshot of the system's threads.
func resumeThreads(pid uint32) error {
	snap, err := windows.CreateToolhelp32Snapshot(windows.TH32CS_SNAPTHREAD, 0)
	if err != nil {
		return fmt.Errorf("listing threads to resume process %d: %w", pid, err)
	}
	defer windows.CloseHandle(snap)
	entry := windows.ThreadEntry32{Size: uint32(unsafe.Sizeof(windows.ThreadEntry32{}))}
	resumed := 0
	for err = windows.Thread32First(snap, &entry); err == nil; err = windows.Thread32Next(snap, &entry) {
		if entry.OwnerProcessID != pid {
			continue
		}
		thread, err := windows.OpenThread(windows.THREAD_SUSPEND_RESUME, false, entry.ThreadID)
		if err != nil {
			return fmt.Errorf("resuming process %d: %w", pid, err)
		}
		_, err = windows.ResumeThread(thread)
		windows.CloseHandle(thread)
		if err != nil {
			return fmt.Errorf("resuming process %d: %w", pid, err)
		}
		resumed++
	}
	if resumed == 0 {
		return fmt.Errorf("resuming process %d: no thread of it found", pid)
	}
	return nil
}
