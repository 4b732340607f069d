package test

import (
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/healthdns/healthdns/test/harness"
)

// TestStatusTokenFromSystemdCredentials starts coredns as the shipped unit does with
// LoadCredential=status.token: $CREDENTIALS_DIRECTORY holds the token, which the Corefile
// names by its credential's name. The status page then takes that token and no other.
func TestStatusTokenFromSystemdCredentials(t *testing.T) {
	t.Parallel()
	const backend = "127.0.6.10"
	port, _ := harness.StartBackends(t, backend)
	creds := t.TempDir()
	if err := os.WriteFile(filepath.Join(creds, "status.token"), []byte("from-systemd-credentials\n"), 0o400); err != nil {
		t.Fatal(err)
	}
	status := "127.0.0.1:" + strconv.Itoa(harness.FreePort(t))
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
	// coredns exits at its Corefile's status line if it cannot read the token.
	harness.LaunchEnv(t, ".:{{PORT}} {\n bind 127.0.0.1\n"+
		harness.TCPPool("creds.lan", port, "100ms", "50ms", []string{backend}, "status "+status+" token status.token")+"}\n",
		[]string{"CREDENTIALS_DIRECTORY=" + creds},
		func(*harness.Server) bool { return get("from-systemd-credentials") == http.StatusOK })
	if code := get("status.token"); code != http.StatusUnauthorized {
		t.Errorf("another token got %d, want 401", code)
	}
}
