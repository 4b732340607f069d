package test

import (
	"bytes"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/healthdns/healthdns/test/harness"
)

// TestStatusTokenFromSystemdCredentials starts coredns as the shipped unit does with
// LoadCredential=status.token: $CREDENTIALS_DIRECTORY holds the token, which the Corefile
// names by its credential's name. The status page then takes that token and no other.
func TestStatusTokenFromSystemdCredentials(t *testing.T) {
	t.Parallel()
	const backend = "127.0.6.10"
	port, _ := harness.StartBackends(t, backend)
	dir, creds := t.TempDir(), t.TempDir()
	if err := os.WriteFile(filepath.Join(creds, "status.token"), []byte("from-systemd\n"), 0o400); err != nil {
		t.Fatal(err)
	}
	status := "127.0.0.1:" + strconv.Itoa(harness.FreePort(t))
	conf := filepath.Join(dir, "Corefile")
	text := fmt.Sprintf(".:%d {\n bind 127.0.0.1\n%s}\n", harness.FreePort(t),
		harness.TCPPool("creds.lan", port, "100ms", "50ms", []string{backend}, "status "+status+" token status.token"))
	if err := os.WriteFile(conf, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	// Run from another directory than the credentials', as systemd runs it from /.
	var out bytes.Buffer
	cmd := exec.Command(harness.Binary(t), "-conf", conf)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "CREDENTIALS_DIRECTORY="+creds)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("coredns output:\n%s", out.String())
		}
	})

	get := func(token string) int {
		req, err := http.NewRequest(http.MethodGet, "http://"+status+"/status.json", nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return 0
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	up := harness.Poll(30*time.Second, 50*time.Millisecond, func() bool {
		select {
		case <-exited:
			return true
		default:
		}
		return get("from-systemd") == http.StatusOK
	})
	select {
	case <-exited:
		t.Fatalf("coredns exited: %v", cmd.ProcessState)
	default:
	}
	if !up {
		t.Fatal("the status page did not take the credential's token within 30s")
	}
	if code := get("status.token"); code != http.StatusUnauthorized {
		t.Errorf("another token got %d, want 401", code)
	}
}
