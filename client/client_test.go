package client

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
)

// Report is tested against a stand-in of POST /api/v1/report, whose contract (README, "check
// push") another change implements: the body it sends, the token, and the answer or the code.
func TestReport(t *testing.T) {
	var got map[string]string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || r.URL.Path != "/api/v1/report" || r.Header.Get("Authorization") != "Bearer tok-tok-tok-tok-tok" {
			t.Errorf("%s %s with %q; want POST /api/v1/report with the token", r.Method, r.URL.Path, r.Header.Get("Authorization"))
		}
		body, _ := io.ReadAll(r.Body)
		got = nil
		if err := json.Unmarshal(body, &got); err != nil {
			t.Errorf("body %q: %v", body, err)
		}
		w.Header().Set("Content-Type", "application/json")
		if got["backend"] == "10.0.0.9" {
			w.WriteHeader(http.StatusNotFound)
			w.Write([]byte(`{"error":"zone app.lan. has no backend 10.0.0.9","code":"backend_not_found"}`))
			return
		}
		w.Write([]byte(`{"ok":true,"zone":"app.lan.","backend":"10.0.0.7","state":"pass"}`))
	}))
	defer srv.Close()
	c, err := New(srv.URL, WithToken("tok-tok-tok-tok-tok\n"), WithServer("dns://:53"))
	if err != nil {
		t.Fatal(err)
	}
	a, err := c.Report(context.Background(), "app.lan.", "10.0.0.7", false, "replication lag 40s")
	if err != nil || !a.OK || a.Backend != "10.0.0.7" {
		t.Fatalf("Report: %+v, %v; want ok for 10.0.0.7", a, err)
	}
	want := map[string]string{"server": "dns://:53", "zone": "app.lan.", "backend": "10.0.0.7", "result": "fail", "output": "replication lag 40s"}
	if len(got) != len(want) {
		t.Errorf("body %v; want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("body %v; want %v", got, want)
		}
	}
	_, err = c.Report(context.Background(), "app.lan.", "10.0.0.9", true, "")
	var e *Error
	if !errors.As(err, &e) || e.Status != 404 || e.Code != "backend_not_found" || e.Message != "zone app.lan. has no backend 10.0.0.9" || !IsCode(err, "backend_not_found") {
		t.Errorf("Report of an unknown backend: %#v; want an *Error 404 backend_not_found with the text", err)
	}
	if got["result"] != "pass" || got["output"] != "" {
		t.Errorf("a pass without output sent %v", got)
	}
}

// The event stream is parsed as Server-Sent Events: comments skipped, each event handed over
// with its sequence number, and the last one returned to follow on from.
func TestEvents(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Last-Event-ID") != "6" {
			t.Errorf("Last-Event-ID %q, want 6", r.Header.Get("Last-Event-ID"))
		}
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, ": 2 events were not kept\n\nid: 7\nevent: backend_down\ndata: {\"version\":1,\"seq\":7,\"kind\":\"backend_down\",\"zone\":\"app.lan.\",\"backend\":\"10.0.0.7\"}\n\n: heartbeat\n\nid: 8\nevent: backend_up\ndata: {\"version\":1,\"seq\":8,\"kind\":\"backend_up\",\"zone\":\"app.lan.\",\"backend\":\"10.0.0.7\"}\n\n")
	}))
	defer srv.Close()
	c, _ := New(srv.URL)
	var kinds []string
	last, err := c.Events(context.Background(), 6, func(e Event) error {
		kinds = append(kinds, string(e.Kind)+" "+e.Backend)
		return nil
	})
	if err != nil || last != 8 || len(kinds) != 2 || kinds[0] != "backend_down 10.0.0.7" || kinds[1] != "backend_up 10.0.0.7" {
		t.Errorf("Events: %v, last %d, %v; want backend_down and backend_up of 10.0.0.7, last 8", kinds, last, err)
	}
}

// A refusal that is not the API's JSON (the guard's 429) is an *Error without a code.
func TestPlainRefusal(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "too many wrong tokens", http.StatusTooManyRequests)
	}))
	defer srv.Close()
	c, _ := New(srv.URL)
	_, err := c.Pools(context.Background())
	var e *Error
	if !errors.As(err, &e) || e.Status != 429 || e.Code != "" || e.Message != "too many wrong tokens" {
		t.Errorf("Pools: %#v; want an *Error 429 without a code", err)
	}
}
