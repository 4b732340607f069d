//go:build unix

package wire

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
)

// ScriptPATH is the PATH a script runs with: its environment is this and HEALTHDNS_BACKEND, and
// nothing of CoreDNS's own (a token's path, a cloud's credentials).
const ScriptPATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// Executable reports whether a script's file mode lets it run: an execute bit.
func Executable(fi os.FileInfo) bool { return fi.Mode().Perm()&0o111 != 0 }

// inOwnGroup starts cmd in a process group of its own, and makes its cancellation kill the
// whole group: a script's children (a curl it runs, a sleep) die with it.
func inOwnGroup(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
}

// ScriptSafe checks, as Keepalived's enable_script_security does, that a script run as root
// cannot be changed by anyone else: the file and every directory above it must belong to root
// and be writable by no one else. Outside root it checks nothing: a script then runs with no
// more rights than whoever could change it.
func ScriptSafe(path string) error {
	if os.Geteuid() != 0 {
		return nil
	}
	for p := path; ; p = filepath.Dir(p) {
		fi, err := os.Stat(p)
		if err != nil {
			return err
		}
		st, ok := fi.Sys().(*syscall.Stat_t)
		if !ok {
			return nil
		}
		writable := fi.Mode().Perm()&0o022 != 0
		sticky := fi.IsDir() && fi.Mode()&os.ModeSticky != 0 && p != path
		if st.Uid != 0 || (writable && !sticky) {
			return fmt.Errorf("%s is %s and owned by uid %d: a script run as root must be writable by root alone", p, fi.Mode().Perm(), st.Uid)
		}
		if p == filepath.Dir(p) {
			return nil
		}
	}
}
