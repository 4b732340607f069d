package harness

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
)

// A port FreePort gives is claimed against other processes: another lock of its file fails while
// this process lives (a second open file description conflicts as another process's would).
func TestFreePortClaimsAcrossProcesses(t *testing.T) {
	port := FreePort(t)
	f, err := os.OpenFile(filepath.Join(claimDir, strconv.Itoa(port)), os.O_RDWR, 0)
	if err != nil {
		t.Fatalf("no claim file for port %d: %v", port, err)
	}
	defer f.Close()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); !errors.Is(err, syscall.EWOULDBLOCK) {
		t.Errorf("a second lock of port %d's claim: %v, want EWOULDBLOCK", port, err)
	}
}
