package status

import (
	"crypto/tls"
	"fmt"
	"os"
	"sync"
	"time"
)

// TLS is a listener's certificate and key, from the files of `tls CERT KEY`. They are read
// with the Corefile (a reload reads them again), and again when either file changes: each
// handshake looks at the files' size and modification time, so a certificate renewed in place
// is served from the next connection on, without a reload. A changed pair that does not load
// (a renewal half written, a key of another certificate) is logged, and the one loaded before
// keeps serving until the files change again.
type TLS struct {
	CertFile, KeyFile string

	mu       sync.Mutex
	cert     *tls.Certificate
	loadedAt [2]fileStamp // of the files when cert was read, or when a load last failed
}

// fileStamp tells a file's contents apart from what they were, as far as stat can.
type fileStamp struct {
	size    int64
	modTime time.Time
}

func stamp(file string) fileStamp {
	fi, err := os.Stat(file)
	if err != nil {
		return fileStamp{size: -1}
	}
	return fileStamp{size: fi.Size(), modTime: fi.ModTime()}
}

// LoadTLS reads the pair of certFile and keyFile. Errors name both files.
func LoadTLS(certFile, keyFile string) (*TLS, error) {
	t := &TLS{CertFile: certFile, KeyFile: keyFile}
	t.loadedAt = t.stamps() // before the read: a change during it is read at the next look
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("%s and %s: %w", certFile, keyFile, err)
	}
	t.cert = &cert
	return t, nil
}

func (t *TLS) stamps() [2]fileStamp { return [2]fileStamp{stamp(t.CertFile), stamp(t.KeyFile)} }

// Certificate is the pair to serve: the one loaded last, read again first if the files changed.
func (t *TLS) Certificate() *tls.Certificate {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.stamps()
	if now == t.loadedAt {
		return t.cert
	}
	t.loadedAt = now
	cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
	if err != nil {
		log.Errorf("status tls: %s and %s changed and do not load: %v; serving the certificate loaded before until they change again", t.CertFile, t.KeyFile, err)
		return t.cert
	}
	t.cert = &cert
	log.Infof("status tls: %s changed; serving it from now on (valid until %s)", t.CertFile, cert.Leaf.NotAfter.UTC().Format(time.RFC3339))
	return t.cert
}
