package healthdns

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/coredns/caddy"
	"github.com/healthdns/healthdns/status"
)

// defaultStatusAddr is where a bare `status` listens: loopback, so that it needs no token.
const defaultStatusAddr = "127.0.0.1:8053"

// parseStatus reads `status [ADDRESS] [token FILE] [tls CERT KEY]`. The token and the
// certificate are read here, so that a file that does not read fails startup at its line rather
// than locking everyone out.
func parseStatus(c *caddy.Controller, args []string) (status.Config, error) {
	const form = "want 'status [ADDRESS] [token FILE] [tls CERT KEY]'"
	sc := status.Config{Addr: defaultStatusAddr, File: c.File(), Line: c.Line()}
	if len(args) > 0 && args[0] != "token" && args[0] != "tls" {
		sc.Addr, args = args[0], args[1:]
	}
	loopback, err := statusAddr(sc.Addr)
	if err != nil {
		return sc, c.Errf("invalid status address '%s': %v; %s, such as %s", sc.Addr, err, form, defaultStatusAddr)
	}
	seen := map[string]bool{}
	for len(args) > 0 {
		opt := args[0]
		if seen[opt] {
			return sc, c.Errf("'%s' given twice; %s", opt, form)
		}
		seen[opt] = true
		switch opt {
		case "token":
			if len(args) < 2 || args[1] == "tls" {
				return sc, c.Errf("'token' wants one FILE; %s", form)
			}
			if sc.Token, err = readStatusToken(args[1]); err != nil {
				return sc, c.Errf("status token: %v", err)
			}
			args = args[2:]
		case "tls":
			if len(args) < 3 || args[1] == "token" || args[2] == "token" {
				return sc, c.Errf("'tls' wants a CERT and a KEY file; %s", form)
			}
			if sc.TLS, err = readStatusTLS(args[1], args[2]); err != nil {
				return sc, c.Errf("status tls: %v", err)
			}
			args = args[3:]
		default:
			return sc, c.Errf("unknown status option '%s'; %s", opt, form)
		}
	}
	switch {
	case !loopback && sc.Token == "":
		return sc, c.Errf("status on %s is reachable from other hosts, and shows every backend and why it failed: want 'status %s token FILE', or a loopback address such as %s", sc.Addr, sc.Addr, defaultStatusAddr)
	case !loopback && sc.TLS == nil:
		// Refusing it would break every Corefile written before `tls` was: say what it costs.
		log.Warningf("%s:%d: status on %s is reachable from other hosts over plain HTTP: its bearer token travels in cleartext, for anyone on the path to read and use; add 'tls CERT KEY' to the status line", sc.File, sc.Line, sc.Addr)
	}
	return sc, nil
}

// readStatusTLS reads the certificate (with its chain) and the private key of 'status ... tls
// CERT KEY', which must be a pair; the listener reads them again when they change. A relative
// file is read as the token's is: from systemd's credentials when the service has them, so
// that a key only root can read reaches a dynamic user.
func readStatusTLS(certFile, keyFile string) (*status.TLS, error) {
	t, err := status.LoadTLS(credentialPath(certFile), credentialPath(keyFile))
	if err != nil {
		return nil, err
	}
	if leaf := t.Certificate().Leaf; leaf != nil && time.Now().After(leaf.NotAfter) {
		log.Warningf("status tls: the certificate in %s expired at %s: clients will refuse it", t.CertFile, leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	return t, nil
}

// credentialPath is where a relative FILE of the status line is read: in systemd's credentials
// directory when it is set, otherwise as the path it is.
func credentialPath(file string) string {
	if dir := os.Getenv(credentialsDir); dir != "" && !filepath.IsAbs(file) {
		return filepath.Join(dir, file)
	}
	return file
}

// statusAddr checks a status listener's address, and says whether only this host can reach it.
func statusAddr(addr string) (loopback bool, err error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return false, fmt.Errorf("want HOST:PORT")
	}
	if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
		return false, fmt.Errorf("port '%s' is not a number from 1 to 65535", port)
	}
	switch host {
	case "":
		return false, nil // every address of the host
	case "localhost":
		return true, nil
	}
	ip, err := netip.ParseAddr(host)
	if err != nil || ip.Zone() != "" {
		return false, fmt.Errorf("host '%s' is not an IP address or localhost", host)
	}
	return ip.Unmap().IsLoopback(), nil
}

// minTokenLen is the shortest token taken: 16 bytes of hex are 64 bits, beyond any guessing at
// the rate a listener answers wrong tokens.
const minTokenLen = 16

// readToken returns the first line of file, which must be a token of at least minTokenLen
// bytes in a file no other user can read or write: one who could read it could use it, and one
// who could write it could choose the token at the next reload. A systemd credential's mode is
// systemd's: it writes the file 0400 and grants a unit's non-root user read access with an ACL,
// whose mask stat shows as the group's bits (0440), while the directory is the unit's alone.
func readToken(file string, credential bool) (string, error) {
	f, err := os.Open(file)
	if err != nil {
		return "", err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return "", err
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 && !credential {
		return "", fmt.Errorf("%s: mode %04o lets other users than its owner read or write the token: want 'chmod 600 %s'", file, uint32(perm), file)
	}
	line, err := bufio.NewReader(f).ReadString('\n')
	if line = strings.TrimSpace(line); line == "" {
		if err != nil && err.Error() != "EOF" {
			return "", fmt.Errorf("%s: %w", file, err)
		}
		return "", fmt.Errorf("%s: the first line is empty; want the token on it", file)
	}
	if len(line) < minTokenLen {
		return "", fmt.Errorf("%s: the token is %d bytes long: want at least %d, such as 'openssl rand -hex 32' writes", file, len(line), minTokenLen)
	}
	return line, nil
}

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
		token, err := readToken(filepath.Join(dir, file), true)
		if errors.Is(err, fs.ErrNotExist) {
			return "", fmt.Errorf("no credential '%s' in $%s (%s): the unit needs 'LoadCredential=%s:/path/of/the/token' (the shipped unit loads status.token from /etc/credstore/)",
				file, credentialsDir, dir, file)
		}
		return token, err
	}
	token, err := readToken(file, false)
	if errors.Is(err, fs.ErrNotExist) && !filepath.IsAbs(file) {
		return "", fmt.Errorf("%w (a relative FILE is read from systemd's $%s when it is set; it is not)", err, credentialsDir)
	}
	return token, err
}
