package harness

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// TestLogPipeHasWhatWasWritten: what a child wrote before it told the test so (through another
// pipe) is in String at once, every time: no waiting for a copying goroutine to catch up.
func TestLogPipeHasWhatWasWritten(t *testing.T) {
	out, err := newLogPipe()
	if err != nil {
		t.Fatal(err)
	}
	toTest, fromChild, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	toChild, fromTest, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	const rounds = 300
	cmd := exec.Command("sh", "-c", fmt.Sprintf(`i=0; while [ $i -lt %d ]; do echo line$i; echo $i >&3; read x <&4; i=$((i+1)); done`, rounds))
	cmd.Stdout, cmd.Stderr = out.w, out.w
	cmd.ExtraFiles = []*os.File{fromChild, toChild}
	err = cmd.Start()
	out.started()
	fromChild.Close()
	toChild.Close()
	if err != nil {
		t.Fatal(err)
	}
	said := bufio.NewScanner(toTest)
	for i := range rounds {
		if !said.Scan() {
			t.Fatalf("round %d: the child stopped: %v", i, said.Err())
		}
		if want := fmt.Sprintf("line%d\n", i); !strings.HasSuffix(out.String(), want) {
			t.Fatalf("round %d: the output does not end with %q though the child wrote it first:\n%s", i, want, out.String())
		}
		fmt.Fprintln(fromTest, "go on")
	}
	fromTest.Close()
	if err := cmd.Wait(); err != nil {
		t.Fatal(err)
	}
	<-out.done
	if n := strings.Count(out.String(), "\n"); n != rounds {
		t.Errorf("%d lines in the end, want %d", n, rounds)
	}
}
