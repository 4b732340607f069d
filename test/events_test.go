package test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/healthdns/healthdns/test/harness"
)

// streamedEvent is one Server-Sent Event of /api/v1/events as a client reads it.
type streamedEvent struct {
	ID   uint64
	Kind string
	Data struct {
		Seq     uint64 `json:"seq"`
		Kind    string `json:"kind"`
		Zone    string `json:"zone"`
		Backend string `json:"backend"`
		Check   string `json:"check"`
		Reason  string `json:"reason"`
		By      string `json:"by"`
		Host    struct {
			Host string `json:"host"`
		} `json:"instance"`
	}
}

// eventStream follows a status listener's event stream from after lastID (0 for all),
// collecting its events until the server ends it.
type eventStream struct {
	mu     sync.Mutex
	events []streamedEvent
	ended  chan struct{}
}

func followEvents(t *testing.T, url, token string, lastID uint64) *eventStream {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	req, _ := http.NewRequestWithContext(ctx, "GET", url, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	if lastID > 0 {
		req.Header.Set("Last-Event-ID", strconv.FormatUint(lastID, 10))
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s", url, resp.Status)
	}
	es := &eventStream{ended: make(chan struct{})}
	go func() {
		defer close(es.ended)
		defer resp.Body.Close()
		r := bufio.NewScanner(resp.Body)
		r.Buffer(nil, 1<<20)
		var e streamedEvent
		for r.Scan() {
			line := r.Text()
			switch {
			case strings.HasPrefix(line, "id: "):
				e.ID, _ = strconv.ParseUint(line[4:], 10, 64)
			case strings.HasPrefix(line, "event: "):
				e.Kind = line[7:]
			case strings.HasPrefix(line, "data: "):
				json.Unmarshal([]byte(line[6:]), &e.Data)
			case line == "" && e.ID != 0:
				es.mu.Lock()
				es.events = append(es.events, e)
				es.mu.Unlock()
				e = streamedEvent{}
			}
		}
	}()
	return es
}

func (es *eventStream) all() []streamedEvent {
	es.mu.Lock()
	defer es.mu.Unlock()
	return append([]streamedEvent(nil), es.events...)
}

// has says whether the stream brought an event of kind for backend.
func (es *eventStream) has(kind, backend string) func() bool {
	return func() bool {
		for _, e := range es.all() {
			if e.Kind == kind && e.Data.Backend == backend {
				return true
			}
		}
		return false
	}
}

// TestEventStream: the real binary's stream brings a killed backend's backend_down and an API
// drain's backend_drained; a reload ends it, and a client that reconnects with the last id it
// got receives what happened meanwhile: over the two connections every event once, in order.
func TestEventStream(t *testing.T) {
	t.Parallel()
	const first, second = "127.0.12.1", "127.0.12.2"
	port, backends := harness.StartBackends(t, first, second)
	statusAddr := "127.0.0.1:" + strconv.Itoa(harness.FreePort(t))
	const token = "events-s3cret-0123456789"
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	conf := func(comment string) string {
		return ".:{{PORT}} {\n bind 127.0.0.1\n # " + comment + "\n" +
			harness.TCPPool("ev.lan", port, "100ms", "50ms", []string{first, second}, "status "+statusAddr+" token "+tokenFile) + "}\n"
	}
	s := harness.Start(t, conf("first"))
	api := &apiClient{base: "http://" + statusAddr, token: token, http: &http.Client{Timeout: 5 * time.Second}}
	harness.Eventually(t, 5*time.Second, func() bool { st, _ := api.drainedBy(t, "ev.lan.", first); return st == "up" }, first+" up")
	url := "http://" + statusAddr + "/api/v1/events"

	stream := followEvents(t, url, token, 0)
	backends[first].Stop()
	harness.Eventually(t, 10*time.Second, stream.has("backend_down", first), "backend_down of the killed backend on the stream")
	if code, body, _ := api.post(t, "/api/v1/drain", token, `{"zone":"ev.lan.","backend":"`+second+`","reason":"kernel upgrade"}`); code != http.StatusOK {
		t.Fatalf("drain: %d %s", code, body)
	}
	harness.Eventually(t, 5*time.Second, stream.has("backend_drained", second), "backend_drained of the API's drain on the stream")

	if err := s.Reload(t, conf("reloaded")); err != nil {
		t.Fatal(err)
	}
	select {
	case <-stream.ended:
	case <-time.After(10 * time.Second):
		t.Fatal("the stream did not end with the reload")
	}
	// While no client follows: the killed backend comes back.
	backends[first].Start()
	harness.Eventually(t, 10*time.Second, func() bool { st, _ := api.drainedBy(t, "ev.lan.", first); return st == "up" }, first+" up again")
	before := stream.all()
	last := before[len(before)-1].ID
	again := followEvents(t, url, token, last)
	harness.Eventually(t, 10*time.Second, again.has("backend_up", first), "backend_up, published while away, after reconnecting")

	got := append(before, again.all()...)
	for i, e := range got {
		if e.ID != uint64(i+1) || e.Data.Seq != e.ID || e.Data.Kind != e.Kind || e.Data.Zone != "ev.lan." {
			var ids []string
			for _, e := range got {
				ids = append(ids, fmt.Sprintf("%d %s", e.ID, e.Kind))
			}
			t.Fatalf("over both connections the events were %v: want ids 1, 2, ... each once, of ev.lan.", ids)
		}
	}
	for _, e := range got {
		switch {
		case e.Kind == "backend_down" && e.Data.Check != "tcp :"+strconv.Itoa(port):
			t.Errorf("backend_down names check %q, want tcp :%d", e.Data.Check, port)
		case e.Kind == "backend_drained" && (e.Data.Reason != "kernel upgrade" || !strings.HasPrefix(e.Data.By, "api 127.0.0.1:")):
			t.Errorf("backend_drained: reason %q by %q, want kernel upgrade by api and the caller", e.Data.Reason, e.Data.By)
		}
	}
}
