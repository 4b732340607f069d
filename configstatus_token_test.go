package healthdns

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/coredns/caddy"
	"github.com/healthdns/healthdns/status"
)

// Under systemd's LoadCredential=, a relative token FILE is the credential of that name.
func TestStatusTokenFromCredentials(t *testing.T) {
	creds := t.TempDir()
	// As stat shows a credential systemd gave a DynamicUser= unit: 0400 with an ACL for the
	// unit's user, whose mask reads as the group's bits.
	credential := filepath.Join(creds, "status.token")
	if err := os.WriteFile(credential, []byte("from-systemd-credentials\n"), 0o400); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(credential, 0o440); err != nil {
		t.Fatal(err)
	}
	elsewhere := writeToken(t, "from-a-path-not-a-credential\n")
	statusOf := func(line string) (status.Config, error) {
		cfgs, err := parse(caddy.NewTestController("dns", "healthdns app.lan {\n backend 10.0.0.1\n "+line+"\n}"))
		if err != nil {
			return status.Config{}, err
		}
		return cfgs[0].status, nil
	}

	t.Setenv(credentialsDir, creds)
	for line, want := range map[string]string{
		"status 0.0.0.0:8053 token status.token": "from-systemd-credentials",
		"status 0.0.0.0:8053 token " + elsewhere: "from-a-path-not-a-credential", // an absolute path is a path
	} {
		if st, err := statusOf(line); err != nil || st.Token != want {
			t.Errorf("%s: token %q (%v), want %q", line, st.Token, err, want)
		}
	}
	_, err := statusOf("status 0.0.0.0:8053 token other.token")
	if want := "Testfile:3 - Error during parsing: status token: no credential 'other.token' in $CREDENTIALS_DIRECTORY (" + creds + "): the unit needs 'LoadCredential=other.token:"; err == nil || !strings.HasPrefix(err.Error(), want) {
		t.Errorf("a missing credential: error %v, want it to start with %q", err, want)
	}

	t.Setenv(credentialsDir, "")
	_, err = statusOf("status 0.0.0.0:8053 token status.token")
	if want := "open status.token: no such file or directory (a relative FILE is read from systemd's $CREDENTIALS_DIRECTORY when it is set; it is not)"; err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("a relative FILE without credentials: error %v, want it to say %q", err, want)
	}
}
