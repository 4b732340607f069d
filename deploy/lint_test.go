package deploy

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestStaticcheck: `staticcheck ./...` finds nothing in the module. .ci/run installs it; a run
// without it skips and says how to get it, except under CI, where a lint that did not run must
// not pass as one that found nothing.
func TestStaticcheck(t *testing.T) {
	bin, err := exec.LookPath("staticcheck")
	if err != nil {
		if gopath, gerr := exec.Command("go", "env", "GOPATH").Output(); gerr == nil {
			candidate := filepath.Join(strings.TrimSpace(string(gopath)), "bin", "staticcheck")
			if _, serr := os.Stat(candidate); serr == nil {
				bin, err = candidate, nil
			}
		}
	}
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("staticcheck not found under CI (.ci/run installs it with go install honnef.co/go/tools/cmd/staticcheck): %v", err)
		}
		t.Skipf("staticcheck not found (go install honnef.co/go/tools/cmd/staticcheck@v0.8.2; .ci/run installs it): %v", err)
	}
	cmd := exec.Command(bin, "./...")
	cmd.Dir = repoRoot(t)
	out, err := cmd.CombinedOutput()
	if err != nil || len(strings.TrimSpace(string(out))) > 0 {
		t.Errorf("staticcheck ./...: %v\n%s", err, out)
	}
}
