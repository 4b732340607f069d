package notify

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/healthdns/healthdns/event"
)

// Attempts is how many times an event is POSTed before it is given up: the first and three
// retries, after Backoff, twice Backoff and four times Backoff.
const Attempts = 4

// Backoff is the wait before the first retry.
const Backoff = time.Second

// post returns t's delivery: a POST of the event's JSON, retried with backoff until a 2xx
// answer, Attempts in all. The queue waits meanwhile: events reach a receiver in order.
func post(t Target, failures prometheus.Counter) func(context.Context, event.Event) error {
	client := &http.Client{Timeout: t.Timeout}
	return func(ctx context.Context, e event.Event) error {
		body := e.JSON()
		wait := Backoff
		var err error
		for attempt := 1; ; attempt++ {
			if err = postOnce(ctx, client, t, body); err == nil {
				return nil
			}
			if ctx.Err() != nil { // the target stopped: not the receiver's failure
				return ctx.Err()
			}
			failures.Inc()
			if attempt == Attempts {
				return fmt.Errorf("gave up after %d attempts: %w", attempt, err)
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(wait):
			}
			wait *= 2
		}
	}
}

func postOnce(ctx context.Context, client *http.Client, t Target, body []byte) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, t.URL, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	if t.Token != "" {
		req.Header.Set("Authorization", "Bearer "+t.Token)
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	// Read a little of the body, so that the connection can be used again.
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("answered %s", resp.Status)
	}
	return nil
}
