package healthdns

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// credentialsDir is systemd's environment variable for the directory of a service's
// credentials (LoadCredential=): readable by the service's own user, a DynamicUser's too, while
// the files they are loaded from stay root's.
const credentialsDir = "CREDENTIALS_DIRECTORY"

// readStatusToken reads the token of 'status ... token FILE'. A relative FILE names a systemd
// credential when the service has credentials, and is read from their directory; otherwise
// FILE is a path, as it always was.
func readStatusToken(file string) (string, error) {
	dir := os.Getenv(credentialsDir)
	if dir != "" && !filepath.IsAbs(file) {
		token, err := readToken(filepath.Join(dir, file))
		if errors.Is(err, fs.ErrNotExist) {
			return "", fmt.Errorf("no credential '%s' in $%s (%s): the unit needs 'LoadCredential=%s:/path/of/the/token' (the shipped unit loads status.token from /etc/credstore/)",
				file, credentialsDir, dir, file)
		}
		return token, err
	}
	token, err := readToken(file)
	if errors.Is(err, fs.ErrNotExist) && !filepath.IsAbs(file) {
		return "", fmt.Errorf("%w (a relative FILE is read from systemd's $%s when it is set; it is not)", err, credentialsDir)
	}
	return token, err
}
