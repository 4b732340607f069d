package healthdns

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"
)

// statusListeners are the process's status listeners, by address. A listener belongs to no
// plugin instance: every instance whose pools name its address registers a view with it, and
// it closes when the last view is released. A reload's new instance registers (in its
// OnStartup) before the old one releases (in its OnShutdown), so the listener, its port and its
// clients' connections carry over, as the probe loops do; CoreDNS's prometheus plugin instead
// closes and reopens its listener, which leaves a moment with nothing on the port.
type statusListeners struct {
	mu     sync.Mutex
	byAddr map[string]*statusListener
}

type statusListener struct {
	srv    *http.Server
	served chan struct{} // closed when Serve has returned
	views  []*statusView // registered, oldest first; the newest is served. Guarded by statusListeners.mu
}

func newStatusListeners() *statusListeners {
	return &statusListeners{byAddr: map[string]*statusListener{}}
}

// acquire registers v with the listener of its address, opening it if no instance has.
func (ls *statusListeners) acquire(v *statusView) error {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	if sl, ok := ls.byAddr[v.addr]; ok {
		sl.views = append(sl.views, v)
		return nil
	}
	ln, err := net.Listen("tcp", v.addr)
	if err != nil {
		return fmt.Errorf("status listener %s (%s:%d): %w", v.addr, v.file, v.line, err)
	}
	sl := &statusListener{served: make(chan struct{}), views: []*statusView{v}}
	sl.srv = &http.Server{
		Handler:           http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { ls.newest(sl).ServeHTTP(w, r) }),
		ReadHeaderTimeout: 5 * time.Second,
		WriteTimeout:      10 * time.Second,
		IdleTimeout:       60 * time.Second,
	}
	ls.byAddr[v.addr] = sl
	go func() {
		defer close(sl.served)
		if err := sl.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Errorf("status listener %s: %v", v.addr, err)
		}
	}()
	log.Infof("status page on http://%s/", ln.Addr())
	return nil
}

// newest is the view a request is served from: during a reload both instances are registered,
// and the newer one is the configuration being put in place.
func (ls *statusListeners) newest(sl *statusListener) *statusView {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	if len(sl.views) == 0 {
		return nil // closing: a request that slipped in gets 503 from a nil view
	}
	return sl.views[len(sl.views)-1]
}

// release unregisters v; the last release of an address closes its listener and waits for its
// server to end.
func (ls *statusListeners) release(v *statusView) {
	ls.mu.Lock()
	sl, ok := ls.byAddr[v.addr]
	if !ok {
		ls.mu.Unlock()
		return
	}
	for i, o := range sl.views {
		if o == v {
			sl.views = append(sl.views[:i:i], sl.views[i+1:]...)
			break
		}
	}
	if len(sl.views) > 0 {
		ls.mu.Unlock()
		return
	}
	delete(ls.byAddr, v.addr)
	ls.mu.Unlock()
	// A page polls once a second over a kept-alive connection: Shutdown waits for a request
	// under way, not for idle clients, and Close ends whatever is left after a second.
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := sl.srv.Shutdown(ctx); err != nil {
		sl.srv.Close()
	}
	<-sl.served
}
