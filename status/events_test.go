package status

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/healthdns/healthdns/event"
)

// sseFrame is one event of a stream as a client reads it.
type sseFrame struct {
	id, kind string
	data     event.Event
}

// stream opens the view's event stream from after lastID ("" for none).
func stream(t *testing.T, url, token, lastID string) (*http.Response, *bufio.Reader) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if lastID != "" {
		req.Header.Set("Last-Event-ID", lastID)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp, bufio.NewReader(resp.Body)
}

// readFrame returns the next event of the stream, skipping comments, or the read's error.
func readFrame(r *bufio.Reader) (sseFrame, error) {
	var f sseFrame
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return f, err
		}
		line = strings.TrimSuffix(line, "\n")
		switch {
		case line == "" && f.id != "":
			return f, nil
		case strings.HasPrefix(line, "id: "):
			f.id = line[4:]
		case strings.HasPrefix(line, "event: "):
			f.kind = line[7:]
		case strings.HasPrefix(line, "data: "):
			if err := json.Unmarshal([]byte(line[6:]), &f.data); err != nil {
				return f, fmt.Errorf("data %q: %w", line[6:], err)
			}
		}
	}
}

// frameWithin reads the next event, failing the test after 5s.
func frameWithin(t *testing.T, r *bufio.Reader) sseFrame {
	t.Helper()
	got := make(chan sseFrame, 1)
	failed := make(chan error, 1)
	go func() {
		f, err := readFrame(r)
		if err != nil {
			failed <- err
			return
		}
		got <- f
	}()
	select {
	case f := <-got:
		return f
	case err := <-failed:
		t.Fatalf("reading the stream: %v", err)
	case <-time.After(5 * time.Second):
		t.Fatal("no event within 5s")
	}
	return sseFrame{}
}

// TestEventStream: the view's pools' events, with the token, replayed after Last-Event-ID and
// then live; a reload ends the stream, and the client that reconnects with the last id it got
// loses nothing and gets nothing twice.
func TestEventStream(t *testing.T) {
	bus := event.NewBus("test", nil)
	f, v := fakeView()
	v.Events = bus
	ls, addr := acquired(t, v)
	url := fmt.Sprintf("http://%s%s", addr, eventsPath)
	ours := func(kind event.Kind) { bus.Publish(event.Event{Kind: kind, Server: f.server, Zone: f.zone}) }
	ours(event.BackendDown)                                                             // 1
	bus.Publish(event.Event{Kind: event.AllDown, Server: f.server, Zone: "other.lan."}) // 2: not this view's
	ours(event.BackendUp)                                                               // 3

	if resp, _ := stream(t, url, "", ""); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("without the token: %d, want 401", resp.StatusCode)
	}
	resp, r := stream(t, url, apiToken, "")
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("GET %s: %d %s", eventsPath, resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	for _, want := range []string{"1 backend_down", "3 backend_up"} {
		if fr := frameWithin(t, r); fr.id+" "+fr.kind != want || fr.data.Zone != "app.lan." {
			t.Fatalf("replayed %s %s of %s, want %s of app.lan.", fr.id, fr.kind, fr.data.Zone, want)
		}
	}
	ours(event.AllDown) // 4
	if fr := frameWithin(t, r); fr.id != "4" || fr.kind != "all_down" {
		t.Fatalf("live: %s %s, want 4 all_down", fr.id, fr.kind)
	}

	// A reload: the new instance's view registers, then the old one's is released.
	_, renewed := fakeView()
	renewed.Addr, renewed.Events = v.Addr, bus
	if err := ls.Acquire(renewed); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ls.Release(renewed) })
	ls.Release(v)
	done := make(chan error, 1)
	go func() { _, err := io.Copy(io.Discard, r); done <- err }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("the stream of a released view did not end")
	}
	ours(event.AllDownOver) // 5, while the client is away
	_, r = stream(t, url, apiToken, "4")
	if fr := frameWithin(t, r); fr.id != "5" || fr.kind != "all_down_over" {
		t.Fatalf("after reconnecting with Last-Event-ID 4: %s %s, want 5 all_down_over", fr.id, fr.kind)
	}
	ours(event.BackendDown) // 6
	if fr := frameWithin(t, r); fr.id != "6" {
		t.Fatalf("live after the reconnect: %s, want 6", fr.id)
	}
}

// TestEventStreamOutlivesTimeouts: a stream followed for longer than the listener's read and
// write timeouts, which are for a request and its answer, goes on.
func TestEventStreamOutlivesTimeouts(t *testing.T) {
	if testing.Short() {
		t.Skip("follows a stream past the listener's timeouts, 11s")
	}
	bus := event.NewBus("test", nil)
	f, v := fakeView()
	v.Events = bus
	_, addr := acquired(t, v)
	_, r := stream(t, fmt.Sprintf("http://%s%s", addr, eventsPath), apiToken, "")
	time.Sleep(max(readTimeout, writeTimeout) + time.Second) // the span itself is the test
	bus.Publish(event.Event{Kind: event.BackendDown, Server: f.server, Zone: f.zone})
	if fr := frameWithin(t, r); fr.id != "1" {
		t.Fatalf("after %v: %s %s, want event 1", max(readTimeout, writeTimeout)+time.Second, fr.id, fr.kind)
	}
}

// stalledWriter is a client that stops reading: each write waits until it is let go.
type stalledWriter struct {
	header  http.Header
	gate    chan struct{}
	entered chan struct{} // closed at the first write, once the stream has subscribed
	once    sync.Once
	mu      sync.Mutex
	body    strings.Builder
}

func (w *stalledWriter) Header() http.Header { return w.header }
func (w *stalledWriter) WriteHeader(int)     {}
func (w *stalledWriter) Flush()              {}
func (w *stalledWriter) Write(p []byte) (int, error) {
	w.once.Do(func() { close(w.entered) })
	<-w.gate
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.body.Write(p)
}

// TestEventStreamFallenBehind: a client slower than the events loses none in silence: its
// stream ends before the first it would miss, and what it got has no gap.
func TestEventStreamFallenBehind(t *testing.T) {
	bus := event.NewBus("test", nil)
	f, v := fakeView()
	v.Events = bus
	w := &stalledWriter{header: http.Header{}, gate: make(chan struct{}), entered: make(chan struct{})}
	req := httptest.NewRequest(http.MethodGet, eventsPath, nil)
	req.Header.Set("Authorization", "Bearer "+apiToken)
	done := make(chan struct{})
	go func() { defer close(done); v.ServeHTTP(w, req) }()
	select { // the stream has subscribed once its first write waits
	case <-w.entered:
	case <-time.After(5 * time.Second):
		t.Fatal("the stream did not start")
	}
	const published = event.RingSize
	for range published {
		bus.Publish(event.Event{Kind: event.BackendDown, Server: f.server, Zone: f.zone})
	}
	close(w.gate)
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("the stream of a client that fell behind did not end")
	}
	r := bufio.NewReader(strings.NewReader(w.body.String()))
	var last int
	for {
		fr, err := readFrame(r)
		if err != nil {
			break
		}
		if id, _ := strconv.Atoi(fr.id); id != last+1 {
			t.Fatalf("event %s after %d: a gap", fr.id, last)
		}
		last++
	}
	if last >= published || !strings.Contains(w.body.String(), "reconnect with Last-Event-ID") {
		t.Errorf("got %d of %d events, and the stream says %q at its end; want it ended before a gap, saying to reconnect", last, published, w.body.String()[max(0, w.body.Len()-80):])
	}
}
