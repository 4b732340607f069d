// Package client drives a healthdns status listener's API from Go: the status, the pools, the
// backends of a zone whose list is in etcd, drains, undrains, fail-backs, node reports and the
// event stream. Every call takes a context; a refusal from the server is an *Error carrying the
// API's stable code (README, "API"). healthdnsctl is built on it.
package client

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/healthdns/healthdns/event"
	"github.com/healthdns/healthdns/status"
)

// The API's documents, as the server defines them.
type (
	Document       = status.Document
	Pool           = status.PoolDoc
	Backend        = status.BackendDoc
	BackendAnswer  = status.BackendAnswer
	BackendRequest = status.BackendRequest
	Event          = event.Event
)

// Client talks to one status listener.
type Client struct {
	base   *url.URL
	token  string
	server string
	http   *http.Client
}

// Option sets up a Client.
type Option func(*Client)

// WithToken sends token as the bearer of every request: the listener's `token` file.
func WithToken(token string) Option { return func(c *Client) { c.token = strings.TrimSpace(token) } }

// WithServer names the server block ("dns://:53") whose zone is meant, when several server
// blocks show the same zone on the listener.
func WithServer(server string) Option { return func(c *Client) { c.server = server } }

// WithHTTPClient sets the HTTP client (its TLS configuration for a listener with `tls`).
func WithHTTPClient(h *http.Client) Option { return func(c *Client) { c.http = h } }

// New makes a client of the status listener at addr: host:port (http), or a URL with http://
// or https://.
func New(addr string, opts ...Option) (*Client, error) {
	if !strings.Contains(addr, "://") {
		addr = "http://" + addr
	}
	u, err := url.Parse(addr)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("status listener %q: want HOST:PORT, http://HOST:PORT or https://HOST:PORT", addr)
	}
	u.Path = strings.TrimSuffix(u.Path, "/")
	c := &Client{base: u, http: &http.Client{}}
	for _, o := range opts {
		o(c)
	}
	return c, nil
}

// Error is the server's refusal of a request: its HTTP status, the API's code (empty for a
// refusal that is not the API's JSON, such as 429 from the listener's guard) and its text.
// Current is, for a write refused as stale (Code "stale_revision"), the backend as it is now.
type Error struct {
	Status  int
	Code    string
	Message string
	Current *BackendAnswer
}

func (e *Error) Error() string {
	if e.Code == "" {
		return fmt.Sprintf("%d %s: %s", e.Status, http.StatusText(e.Status), e.Message)
	}
	return fmt.Sprintf("%s (%d %s)", e.Message, e.Status, e.Code)
}

// IsCode reports whether err is the server's refusal with code.
func IsCode(err error, code string) bool {
	var e *Error
	return errors.As(err, &e) && e.Code == code
}

// WriteAnswer is the answer of a drain, an undrain, a fail-back or a report.
type WriteAnswer struct {
	OK       bool       `json:"ok"`
	Server   string     `json:"server,omitempty"`
	Zone     string     `json:"zone,omitempty"`
	Backend  string     `json:"backend,omitempty"`
	State    string     `json:"state,omitempty"`
	Reason   string     `json:"reason,omitempty"`
	Until    *time.Time `json:"until,omitempty"`
	Switched []Switched `json:"switched,omitempty"`
}

// Switched is a family that a fail-back moved to another priority group.
type Switched struct {
	Family string `json:"family"`
	From   uint8  `json:"from"`
	To     uint8  `json:"to"`
}

// request sends a request and decodes a 2xx answer into out; anything else is an *Error.
func (c *Client) request(ctx context.Context, method, path string, query url.Values, body any, header http.Header, out any) (http.Header, error) {
	u := *c.base
	u.Path += path
	if c.server != "" {
		if query == nil {
			query = url.Values{}
		}
		query.Set("server", c.server)
	}
	u.RawQuery = query.Encode()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, u.String(), rd)
	if err != nil {
		return nil, err
	}
	for k, vs := range header {
		req.Header[k] = vs
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, fmt.Errorf("%s %s: reading the answer: %w", method, u.Path, err)
	}
	if resp.StatusCode/100 != 2 {
		return resp.Header, refusal(resp.StatusCode, data)
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			return nil, fmt.Errorf("%s %s: the answer is not the API's JSON: %w", method, u.Path, err)
		}
	}
	return resp.Header, nil
}

func refusal(code int, body []byte) error {
	var a struct {
		Error   string         `json:"error"`
		Code    string         `json:"code"`
		Current *BackendAnswer `json:"current"`
	}
	if json.Unmarshal(body, &a) == nil && a.Error != "" {
		return &Error{Status: code, Code: a.Code, Message: a.Error, Current: a.Current}
	}
	return &Error{Status: code, Message: strings.TrimSpace(string(body))}
}

// Status reads /status.json.
func (c *Client) Status(ctx context.Context) (*Document, error) {
	var d Document
	if _, err := c.request(ctx, http.MethodGet, "/status.json", nil, nil, nil, &d); err != nil {
		return nil, err
	}
	return &d, nil
}

// Pools reads every pool shown on the listener.
func (c *Client) Pools(ctx context.Context) ([]Pool, error) {
	var d status.PoolsDoc
	if _, err := c.request(ctx, http.MethodGet, "/api/v1/pools", nil, nil, nil, &d); err != nil {
		return nil, err
	}
	return d.Pools, nil
}

// Pool reads the pool of zone.
func (c *Client) Pool(ctx context.Context, zone string) (*Pool, error) {
	var p Pool
	if _, err := c.request(ctx, http.MethodGet, "/api/v1/pools/"+url.PathEscape(zone), nil, nil, nil, &p); err != nil {
		return nil, err
	}
	return &p, nil
}

func backendPath(zone, address string) string {
	return "/api/v1/pools/" + url.PathEscape(zone) + "/backends/" + url.PathEscape(address)
}

// Backend reads a backend of zone: for a zone with backends_etcd its key and the key's
// Revision, which SetBackend and RemoveBackend name.
func (c *Client) Backend(ctx context.Context, zone, address string) (*BackendAnswer, error) {
	var a BackendAnswer
	if _, err := c.request(ctx, http.MethodGet, backendPath(zone, address), nil, nil, nil, &a); err != nil {
		return nil, err
	}
	return &a, nil
}

// SetBackend writes a backend of a zone with backends_etcd as req says, if its key is still at
// revision; revision 0 adds a backend that has no key. A key changed since is refused with an
// *Error of code "stale_revision" whose Current is the backend as it is now.
func (c *Client) SetBackend(ctx context.Context, zone, address string, req BackendRequest, revision int64) (*BackendAnswer, error) {
	var a BackendAnswer
	if _, err := c.request(ctx, http.MethodPut, backendPath(zone, address), nil, req, ifMatch(revision), &a); err != nil {
		return nil, err
	}
	return &a, nil
}

// RemoveBackend deletes a backend of a zone with backends_etcd if its key is still at revision.
func (c *Client) RemoveBackend(ctx context.Context, zone, address string, revision int64) (*BackendAnswer, error) {
	var a BackendAnswer
	if _, err := c.request(ctx, http.MethodDelete, backendPath(zone, address), nil, nil, ifMatch(revision), &a); err != nil {
		return nil, err
	}
	return &a, nil
}

func ifMatch(revision int64) http.Header {
	if revision == 0 {
		return nil
	}
	return http.Header{"If-Match": {`"` + strconv.FormatInt(revision, 10) + `"`}}
}

// DrainRequest is a drain: Until zero for a drain without end.
type DrainRequest struct {
	Zone, Backend string
	Reason        string
	Until         time.Time
}

// Drain takes a backend out of the answers (README, "Writes").
func (c *Client) Drain(ctx context.Context, d DrainRequest) (*WriteAnswer, error) {
	body := map[string]string{"zone": d.Zone, "backend": d.Backend}
	if d.Reason != "" {
		body["reason"] = d.Reason
	}
	if !d.Until.IsZero() {
		body["until"] = d.Until.UTC().Format(time.RFC3339)
	}
	return c.write(ctx, "drain", body)
}

// Undrain lifts a drain set through the API.
func (c *Client) Undrain(ctx context.Context, zone, backend string) (*WriteAnswer, error) {
	return c.write(ctx, "undrain", map[string]string{"zone": zone, "backend": backend})
}

// FailBack makes the highest healthy priority group of zone serve again.
func (c *Client) FailBack(ctx context.Context, zone string) (*WriteAnswer, error) {
	return c.write(ctx, "failback", map[string]string{"zone": zone})
}

// Report sends a node's own verdict on backend address of zone, for its `check push`: pass or
// fail, with a line of the node's script's output.
func (c *Client) Report(ctx context.Context, zone, address string, pass bool, output string) (*WriteAnswer, error) {
	result := "fail"
	if pass {
		result = "pass"
	}
	body := map[string]string{"zone": zone, "backend": address, "result": result}
	if output != "" {
		body["output"] = output
	}
	return c.write(ctx, "report", body)
}

func (c *Client) write(ctx context.Context, endpoint string, body map[string]string) (*WriteAnswer, error) {
	if c.server != "" {
		body["server"] = c.server
	}
	var a WriteAnswer
	if _, err := c.request(ctx, http.MethodPost, "/api/v1/"+endpoint, nil, body, nil, &a); err != nil {
		return nil, err
	}
	return &a, nil
}

// Events follows the event stream from after the event of sequence number after (0 for what is
// kept), calling handle with each event, until ctx ends, handle fails, or the server ends the
// stream (a reload, a shutdown, a client too slow). It returns the sequence number of the last
// event handled, to follow on from with another call.
func (c *Client) Events(ctx context.Context, after uint64, handle func(Event) error) (uint64, error) {
	u := *c.base
	u.Path += "/api/v1/events"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return after, err
	}
	req.Header.Set("Accept", "text/event-stream")
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	if after > 0 {
		req.Header.Set("Last-Event-ID", strconv.FormatUint(after, 10))
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return after, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		return after, refusal(resp.StatusCode, data)
	}
	// Server-Sent Events: fields until a blank line, which dispatches; a line starting with ':'
	// is a comment (the server's heartbeat).
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	var data strings.Builder
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "":
			if data.Len() == 0 {
				continue
			}
			var e Event
			if err := json.Unmarshal([]byte(data.String()), &e); err != nil {
				return after, fmt.Errorf("event stream: an event that is not JSON: %w", err)
			}
			data.Reset()
			if err := handle(e); err != nil {
				return after, err
			}
			after = e.Seq
		case strings.HasPrefix(line, ":"):
		case strings.HasPrefix(line, "data:"):
			if data.Len() > 0 {
				data.WriteByte('\n')
			}
			data.WriteString(strings.TrimPrefix(strings.TrimPrefix(line, "data:"), " "))
		}
	}
	if ctx.Err() != nil {
		return after, ctx.Err()
	}
	return after, sc.Err()
}
