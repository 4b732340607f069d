package health

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// This package holds the code that differs by system (raw sockets, socket options), and the
// rest of the suite runs on Linux only: vetting it, tests included, for the other systems
// CoreDNS ships for is what shows it still builds there. deploy's TestWindowsVet vets the whole
// module for Windows, and TestWindowsWine runs it.
func TestBuildsOnOtherSystems(t *testing.T) {
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skipf("no go tool to cross-compile with: %v", err)
	}
	for _, target := range []string{"windows/amd64", "windows/arm64", "darwin/arm64"} {
		t.Run(target, func(t *testing.T) {
			t.Parallel()
			goos, goarch, _ := strings.Cut(target, "/")
			cmd := exec.Command(goTool, "vet", "./...", "../balance")
			cmd.Env = append(os.Environ(), "GOOS="+goos, "GOARCH="+goarch, "CGO_ENABLED=0")
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("go vet for %s: %v\n%s", target, err, out)
			}
		})
	}
}
