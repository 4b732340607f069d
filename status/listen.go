package status

import (
	clog "github.com/coredns/coredns/plugin/pkg/log"

	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"
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
	served chan struct{} // closed when Serve has returned
	views  []*View       // registered, oldest first; the newest is served. Guarded by Listeners.mu
}

func NewListeners() *Listeners {
	return &Listeners{byAddr: map[string]*listener{}}
}

// Acquire registers v with the listener of its address, opening it if no instance has.
func (ls *Listeners) Acquire(v *View) error {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	if sl, ok := ls.byAddr[v.Addr]; ok {
		sl.views = append(sl.views, v)
		return nil
	}
	ln, err := net.Listen("tcp", v.Addr)
	if err != nil {
		return fmt.Errorf("status listener %s (%s:%d): %w", v.Addr, v.File, v.Line, err)
	}
	sl := &listener{served: make(chan struct{}), views: []*View{v}}
	sl.srv = &http.Server{
		Handler:           http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { ls.newest(sl).ServeHTTP(w, r) }),
		ReadHeaderTimeout: 5 * time.Second,
		WriteTimeout:      10 * time.Second,
		IdleTimeout:       60 * time.Second,
	}
	ls.byAddr[v.Addr] = sl
	go func() {
		defer close(sl.served)
		if err := sl.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Errorf("status listener %s: %v", v.Addr, err)
		}
	}()
	log.Infof("status page on http://%s/", ln.Addr())
	return nil
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
}
