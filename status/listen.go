package status

import (
	clog "github.com/coredns/coredns/plugin/pkg/log"

	"context"
	"crypto/tls"
	"errors"
	"fmt"
	golog "log"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"golang.org/x/net/netutil"
)

// log is the plugin's: the listener's lines are healthdns's to an operator.
var log = clog.NewWithPlugin("healthdns")

// Listeners are the process's status listeners, by address. A listener belongs to no
// plugin instance: every instance whose pools name its address registers a view with it, and
// it closes when the last view is released. A reload's new instance registers (in its
// OnStartup) before the old one releases (in its OnShutdown), so the listener, its port and its
// clients' connections carry over, as the probe loops do; CoreDNS's prometheus plugin instead
// closes and reopens its listener, which leaves a moment with nothing on the port.
type Listeners struct {
	mu     sync.Mutex
	byAddr map[string]*listener
}

type listener struct {
	srv    *http.Server
	addr   net.Addr // bound
	guard  *guard
	served chan struct{} // closed when Serve has returned
	views  []*View       // registered, oldest first; the newest is served. Guarded by Listeners.mu
}

// A listener's connections and how long a client may hold one. Each connection is a file
// descriptor, which the prober's sockets and scripts need more: 250 idle clients once left
// exec probes failing with "too many open files". Past maxConns a connection waits in the
// kernel's accept queue, holding none of the process's descriptors, until one closes. A page
// polls once a second over one kept-alive connection, and a write's body is at most 8 KiB, so
// a client that is silent for seconds is not one of them.
const (
	maxConns          = 64
	readHeaderTimeout = 3 * time.Second
	readTimeout       = 5 * time.Second
	writeTimeout      = 10 * time.Second
	idleTimeout       = 10 * time.Second
)

func NewListeners() *Listeners {
	return &Listeners{byAddr: map[string]*listener{}}
}

// Acquire registers v with the listener of its address, opening it if no instance has.
func (ls *Listeners) Acquire(v *View) error {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	v.done = make(chan struct{})
	if sl, ok := ls.byAddr[v.Addr]; ok {
		v.guard = sl.guard
		if was := sl.views[len(sl.views)-1]; (was.TLS == nil) != (v.TLS == nil) {
			log.Infof("status listener %s: now %s, was %s", v.Addr, scheme(v), scheme(was))
		}
		sl.views = append(sl.views, v)
		return nil
	}
	ln, err := net.Listen("tcp", v.Addr)
	if err != nil {
		return fmt.Errorf("status listener %s (%s:%d): %w", v.Addr, v.File, v.Line, err)
	}
	sl := &listener{addr: ln.Addr(), guard: newGuard(ln.Addr()), served: make(chan struct{}), views: []*View{v}}
	v.guard = sl.guard
	sl.srv = &http.Server{
		Handler:           ls.handler(sl),
		ReadHeaderTimeout: readHeaderTimeout,
		ReadTimeout:       readTimeout,
		WriteTimeout:      writeTimeout,
		IdleTimeout:       idleTimeout,
		ErrorLog:          golog.New(serverLog{addr: v.Addr}, "", 0),
	}
	ls.byAddr[v.Addr] = sl
	// The cap counts connections before their TLS handshake, which http.Server bounds by the
	// shortest of its timeouts: a client that never finishes one holds a slot for seconds.
	accepted := &schemeListener{Listener: netutil.LimitListener(ln, maxConns), ls: ls, sl: sl}
	accepted.tls = &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: accepted.certificate}
	go func() {
		defer close(sl.served)
		if err := sl.srv.Serve(accepted); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Errorf("status listener %s: %v", v.Addr, err)
		}
	}()
	log.Infof("status page on %s://%s/", scheme(v), ln.Addr())
	return nil
}

// serverLog takes what http.Server logs to the plugin's log, but for failed TLS handshakes: a
// client that does not trust the certificate, a scanner, or an old TLS version fails at every
// connection, and says so itself; a line each would let anyone fill the log.
type serverLog struct{ addr string }

func (l serverLog) Write(p []byte) (int, error) {
	line := strings.TrimSpace(string(p))
	if !strings.HasPrefix(line, "http: TLS handshake error") {
		log.Warningf("status listener %s: %s", l.addr, line)
	}
	return len(p), nil
}

func scheme(v *View) string {
	if v.TLS != nil {
		return "https"
	}
	return "http"
}

// schemeListener serves each connection as the newest view says when it is accepted: over
// TLS with the view's certificate, or in the clear. The listener outlives reloads, so a reload
// that adds or drops `tls`, or renews the certificate, takes effect on the same port, for the
// connections that follow.
type schemeListener struct {
	net.Listener
	ls  *Listeners
	sl  *listener
	tls *tls.Config
}

func (l *schemeListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	if v := l.ls.newest(l.sl); v != nil && v.TLS != nil {
		return tls.Server(c, l.tls), nil
	}
	return c, nil
}

// certificate is the newest view's: the one a reload read last.
func (l *schemeListener) certificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	v := l.ls.newest(l.sl)
	if v == nil || v.TLS == nil {
		return nil, errors.New("the status listener no longer serves TLS")
	}
	return v.TLS.Certificate(), nil
}

// handler serves sl's requests: those its guard admits, from its newest view. A connection
// kept alive in the clear from before a reload that added `tls` is refused and closed, so that
// a page polling over it does not go on sending its token in the clear.
func (ls *Listeners) handler(sl *listener) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		v := ls.newest(sl)
		if v != nil && v.TLS != nil && r.TLS == nil {
			w.Header().Set("Connection", "close")
			http.Error(w, "this listener serves HTTPS: https://"+r.Host+"/", http.StatusBadRequest)
			return
		}
		if sl.guard.admit(w, r) {
			v.ServeHTTP(w, r)
		}
	})
}

// newest is the view a request is served from: during a reload both instances are registered,
// and the newer one is the configuration being put in place.
func (ls *Listeners) newest(sl *listener) *View {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	if len(sl.views) == 0 {
		return nil // closing: a request that slipped in gets 503 from a nil view
	}
	return sl.views[len(sl.views)-1]
}

// Release unregisters v; the last release of an address closes its listener and waits for its
// server to end.
func (ls *Listeners) Release(v *View) {
	ls.mu.Lock()
	sl, ok := ls.byAddr[v.Addr]
	if !ok {
		ls.mu.Unlock()
		return
	}
	for i, o := range sl.views {
		if o == v {
			sl.views = append(sl.views[:i:i], sl.views[i+1:]...)
			close(v.done) // its streams end; their clients reconnect to the newest view
			break
		}
	}
	if len(sl.views) > 0 {
		ls.mu.Unlock()
		return
	}
	delete(ls.byAddr, v.Addr)
	ls.mu.Unlock()
	// A page polls once a second over a kept-alive connection: Shutdown waits for a request
	// under way, not for idle clients, and Close ends whatever is left after a second.
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := sl.srv.Shutdown(ctx); err != nil {
		sl.srv.Close()
	}
	<-sl.served
	sl.guard.close()
}
