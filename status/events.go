package status

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/healthdns/healthdns/event"
)

// eventsPath is the stream of the pools' events, as Server-Sent Events.
const eventsPath = apiPrefix + "events"

// maxStreams bounds a listener's event streams to half its connections: each holds one for as
// long as its client follows, and the page, /status.json and the writes need the rest.
const maxStreams = maxConns / 2

// heartbeat is how often an idle stream sends a comment, so that a proxy between does not
// close it as idle and a client knows it is still connected.
const heartbeat = 15 * time.Second

// serveEvents streams the events of the view's pools: those after the client's Last-Event-ID
// that the ring still holds, then each as it comes. The stream ends when the client goes, or
// when the view is released (a reload, a shutdown): the client reconnects with the last id it
// got, and the new view serves it from the same ring, which the process keeps across reloads.
func (v *View) serveEvents(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		w.Header().Set("Allow", "GET")
		http.Error(w, "the event stream is GET "+eventsPath, http.StatusMethodNotAllowed)
		return
	}
	if !v.authorized(r) {
		w.Header().Set("WWW-Authenticate", `Bearer realm="healthdns"`)
		http.Error(w, "want Authorization: Bearer TOKEN", http.StatusUnauthorized)
		return
	}
	if v.Events == nil {
		http.Error(w, "no event stream here", http.StatusNotFound)
		return
	}
	var after uint64
	if id := r.Header.Get("Last-Event-ID"); id != "" {
		n, err := strconv.ParseUint(strings.TrimSpace(id), 10, 64)
		if err != nil {
			http.Error(w, fmt.Sprintf("Last-Event-ID %q: want the id of an event", id), http.StatusBadRequest)
			return
		}
		after = n
	}
	if !v.guard.openStream() {
		w.Header().Set("Retry-After", "5")
		http.Error(w, fmt.Sprintf("%d event streams are open on this listener already", maxStreams), http.StatusServiceUnavailable)
		return
	}
	defer v.guard.closeStream()

	backlog, complete, sub := v.Events.Subscribe(after)
	defer sub.Close()
	rc := http.NewResponseController(w)
	// The listener's read and write timeouts are for a request and its answer; a stream is
	// one answer that lasts. Each write gets writeTimeout of its own instead, so a client that
	// stops reading still lets its connection go.
	rc.SetReadDeadline(time.Time{})
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	shows := v.shows()
	send := func(chunk string) bool {
		rc.SetWriteDeadline(time.Now().Add(writeTimeout))
		if _, err := w.Write([]byte(chunk)); err != nil {
			return false
		}
		return rc.Flush() == nil
	}
	first := ": healthdns events\n\n"
	if !complete {
		first = fmt.Sprintf(": events after %d were lost: the ring keeps the last %d\n\n", after, event.RingSize)
	}
	if !send(first) {
		return
	}
	for _, e := range backlog {
		if shows[e.Server+" "+e.Zone] && !send(frame(e)) {
			return
		}
	}
	tick := time.NewTicker(heartbeat)
	defer tick.Stop()
	for {
		select {
		case e := <-sub.Events():
			if sub.Dropped() > 0 {
				// The feed lost events while this client fell behind: it ends here, before
				// the gap, and the client's reconnect with the last id it got replays them
				// from the ring.
				send(": fell behind: reconnect with Last-Event-ID\n\n")
				return
			}
			if shows[e.Server+" "+e.Zone] && !send(frame(e)) {
				return
			}
		case <-tick.C:
			if !send(": heartbeat\n\n") {
				return
			}
		case <-r.Context().Done():
			return
		case <-v.released():
			return
		}
	}
}

// frame is e as one Server-Sent Event: its id is its sequence number, for Last-Event-ID.
func frame(e event.Event) string {
	return fmt.Sprintf("id: %d\nevent: %s\ndata: %s\n\n", e.Seq, e.Kind, e.JSON())
}

// shows is the view's pools, as "server zone": a listener streams the events of the pools
// that name it, and no other's.
func (v *View) shows() map[string]bool {
	out := make(map[string]bool, len(v.Pools))
	for _, s := range v.Pools {
		out[s.Pool.Server()+" "+s.Pool.Zone()] = true
	}
	return out
}

// released is closed when the view's instance lets go of the listener; nil (never) for a view
// served without one.
func (v *View) released() <-chan struct{} {
	if v.guard == nil {
		return nil
	}
	return v.done
}

// openStream takes one of the listener's stream slots, if one is free.
func (g *guard) openStream() bool {
	if g == nil {
		return true
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.streams >= maxStreams {
		return false
	}
	g.streams++
	return true
}

func (g *guard) closeStream() {
	if g == nil {
		return
	}
	g.mu.Lock()
	g.streams--
	g.mu.Unlock()
}
