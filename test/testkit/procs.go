package testkit

import (
	"os"
	"strconv"
	"strings"
	"testing"
)

// ProcessesWithEnv counts the running processes (zombies aside) whose environment has a
// variable that starts with prefix ("HEALTHDNS_BACKEND=127.6."): a script's, and whatever it
// started, which inherits it. It skips the test where /proc cannot tell.
func ProcessesWithEnv(t testing.TB, prefix string) int {
	t.Helper()
	dirs, err := os.ReadDir("/proc")
	if err != nil {
		t.Skipf("counting processes: %v", err)
	}
	n := 0
	for _, d := range dirs {
		if _, err := strconv.Atoi(d.Name()); err != nil {
			continue
		}
		env, err := os.ReadFile("/proc/" + d.Name() + "/environ")
		if err != nil || !hasVar(string(env), prefix) {
			continue
		}
		stat, err := os.ReadFile("/proc/" + d.Name() + "/stat")
		if err != nil {
			continue // gone
		}
		// The state follows the command's closing parenthesis; Z is a zombie, X dead.
		if fields := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+1:])); len(fields) > 0 && fields[0] != "Z" && fields[0] != "X" {
			n++
		}
	}
	return n
}

func hasVar(environ, prefix string) bool {
	for _, v := range strings.Split(environ, "\x00") {
		if strings.HasPrefix(v, prefix) {
			return true
		}
	}
	return false
}
