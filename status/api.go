package status

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"strings"
	"time"

	"github.com/healthdns/healthdns/pool"
)

// The status listener's writes: POST, a JSON body, and the listener's bearer token, always. A
// bearer header is never sent by a browser on its own, as a cookie is, so no other page can
// make a visitor's browser write; and no GET changes anything, so neither can a link.
const (
	apiPrefix = "/api/v1/"
	// maxWriteBody bounds a write's body: a zone, an address, a time and a reason fit many times.
	maxWriteBody = 8 << 10
)

// The bodies of the writes. Fields they do not name are refused, so that a misspelt "untill"
// is an error and not a drain without end. server is needed only when the zone is served by
// several servers (server blocks) that show on the same listener.
type drainRequest struct {
	Server  string `json:"server"`
	Zone    string `json:"zone"`
	Backend string `json:"backend"`
	Reason  string `json:"reason"`
	Until   string `json:"until"`
}

type undrainRequest struct {
	Server  string `json:"server"`
	Zone    string `json:"zone"`
	Backend string `json:"backend"`
}

type failBackRequest struct {
	Server string `json:"server"`
	Zone   string `json:"zone"`
}

// writeAnswer is a write's answer: ok and what was done, or error alone.
type writeAnswer struct {
	OK       bool             `json:"ok,omitempty"`
	Error    string           `json:"error,omitempty"`
	Code     string           `json:"code,omitempty"` // with error: what a client branches on (codes.go)
	Server   string           `json:"server,omitempty"`
	Zone     string           `json:"zone,omitempty"`
	Backend  string           `json:"backend,omitempty"`
	State    string           `json:"state,omitempty"`
	Reason   string           `json:"reason,omitempty"`
	Until    *time.Time       `json:"until,omitempty"`
	Switched []switchedAnswer `json:"switched,omitempty"`
}

type switchedAnswer struct {
	Family string `json:"family"`
	From   uint8  `json:"from"`
	To     uint8  `json:"to"`
}

// serveWrite answers a request under apiPrefix. Refusals come in this order: an unknown
// endpoint, a method other than POST, a listener without a token, a missing or wrong token, a
// body that does not read; then the pool's own (unknown backend, conflicting state). A report
// is the exception: its token may be its zone's, known once the body is read.
func (v *View) serveWrite(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	var write func(*View, *http.Request, *json.Decoder) (writeAnswer, int)
	switch r.URL.Path {
	case apiPrefix + "drain":
		write = (*View).drain
	case apiPrefix + "undrain":
		write = (*View).undrain
	case apiPrefix + "failback":
		write = (*View).failBack
	case apiPrefix + "report":
		write = (*View).report
	default:
		answer(w, http.StatusNotFound, failed(codeNotFound, "no endpoint %s: want POST %sdrain, %sundrain, %sfailback or %sreport", r.URL.Path, apiPrefix, apiPrefix, apiPrefix, apiPrefix))
		return
	}
	// A report may carry its zone's report token instead of the listener's: it is checked once
	// the body names the zone (reportAuthorized).
	listenerToken := r.URL.Path != apiPrefix+"report"
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		answer(w, http.StatusMethodNotAllowed, failed(codeMethod, "%s takes POST with a JSON body, not %s", r.URL.Path, r.Method))
		return
	}
	if listenerToken && !v.writeAllowed(w, r) {
		return
	}
	body, ok := readBody(w, r)
	if !ok {
		return
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	a, code := write(v, r, dec)
	if code == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Bearer realm="healthdns"`)
	}
	answer(w, code, a)
}

// writeAllowed refuses a write on a listener without a token, or without the token, and says
// whether the write may go on.
func (v *View) writeAllowed(w http.ResponseWriter, r *http.Request) bool {
	if v.Token == "" {
		answer(w, http.StatusForbidden, failed(codeNoToken, "writes need a token, and the status listener on %s has none: want 'status %s token FILE' (%s:%d)",
			v.Addr, v.Addr, v.File, v.Line))
		return false
	}
	if !v.authorized(r) {
		w.Header().Set("WWW-Authenticate", `Bearer realm="healthdns"`)
		answer(w, http.StatusUnauthorized, failed(codeUnauthorized, "want Authorization: Bearer TOKEN, the status listener's token"))
		return false
	}
	return true
}

// readBody reads a write's body, up to maxWriteBody, or answers why it did not.
func readBody(w http.ResponseWriter, r *http.Request) ([]byte, bool) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxWriteBody))
	if err != nil {
		if errors.As(err, new(*http.MaxBytesError)) {
			answer(w, http.StatusRequestEntityTooLarge, failed(codeTooLarge, "body longer than %d bytes", maxWriteBody))
			return nil, false
		}
		answer(w, http.StatusBadRequest, failed(codeBadRequest, "reading the body: %v", err))
		return nil, false
	}
	return body, true
}

// decodeBody reads one JSON object into dst, and nothing after it.
func decodeBody(dec *json.Decoder, dst any) error {
	if err := dec.Decode(dst); err != nil {
		return fmt.Errorf("want a JSON object of the endpoint's fields: %v", err)
	}
	if dec.More() {
		return fmt.Errorf("want one JSON object, and found more after it")
	}
	return nil
}

func (v *View) drain(r *http.Request, dec *json.Decoder) (writeAnswer, int) {
	var req drainRequest
	if err := decodeBody(dec, &req); err != nil {
		return failed(codeBadRequest, "%v", err), http.StatusBadRequest
	}
	p, addr, a, code := v.target(req.Server, req.Zone, req.Backend)
	if p == nil {
		return a, code
	}
	d := pool.Drain{Reason: req.Reason}
	if err := pool.CheckReason(d.Reason); err != nil {
		return failed(codeBadRequest, "%v", err), http.StatusBadRequest
	}
	if req.Until != "" {
		until, err := time.Parse(time.RFC3339, req.Until)
		if err != nil {
			return failed(codeBadRequest, "until '%s': want an RFC 3339 time such as 2026-12-24T18:00:00Z", req.Until), http.StatusBadRequest
		}
		if !until.After(time.Now()) {
			return failed(codeBadRequest, "until %s is past: want a time to come, or no until for a drain without end", req.Until), http.StatusBadRequest
		}
		d.Until = until
	}
	if err := p.Drain(addr, d, r.RemoteAddr); err != nil {
		return refused(err)
	}
	return writeAnswer{OK: true, Server: p.Server(), Zone: p.Zone(), Backend: addr.String(), State: "drained",
		Reason: d.Reason, Until: timePtr(d.Until)}, http.StatusOK
}

func (v *View) undrain(r *http.Request, dec *json.Decoder) (writeAnswer, int) {
	var req undrainRequest
	if err := decodeBody(dec, &req); err != nil {
		return failed(codeBadRequest, "%v", err), http.StatusBadRequest
	}
	p, addr, a, code := v.target(req.Server, req.Zone, req.Backend)
	if p == nil {
		return a, code
	}
	if err := p.Undrain(addr, r.RemoteAddr); err != nil {
		return refused(err)
	}
	return writeAnswer{OK: true, Server: p.Server(), Zone: p.Zone(), Backend: addr.String(), State: "undrained"}, http.StatusOK
}

func (v *View) failBack(r *http.Request, dec *json.Decoder) (writeAnswer, int) {
	var req failBackRequest
	if err := decodeBody(dec, &req); err != nil {
		return failed(codeBadRequest, "%v", err), http.StatusBadRequest
	}
	p, a, code := v.pool(req.Server, req.Zone)
	if p == nil {
		return a, code
	}
	switched, err := p.FailBack(r.RemoteAddr)
	if err != nil {
		return refused(err)
	}
	a = writeAnswer{OK: true, Server: p.Server(), Zone: p.Zone()}
	for _, sw := range switched {
		a.Switched = append(a.Switched, switchedAnswer{Family: sw.Family, From: sw.From, To: sw.To})
	}
	return a, http.StatusOK
}

// pool finds the pool of zone shown on this listener; server is needed only when several
// servers' pools of that zone show on it.
func (v *View) pool(server, zone string) (Pool, writeAnswer, int) {
	if zone == "" {
		return nil, failed(codeBadRequest, "want \"zone\", such as \"app.lan.\""), http.StatusBadRequest
	}
	zone = strings.ToLower(zone)
	if !strings.HasSuffix(zone, ".") {
		zone += "."
	}
	var found []Pool
	for _, shown := range v.Pools {
		p := shown.Pool
		if p.Zone() == zone && (server == "" || p.Server() == server) {
			found = append(found, p)
		}
	}
	switch len(found) {
	case 0:
		if server != "" {
			return nil, failed(codeZoneNotFound, "no zone %s of server %s on this status listener", zone, server), http.StatusNotFound
		}
		return nil, failed(codeZoneNotFound, "no zone %s on this status listener", zone), http.StatusNotFound
	case 1:
		return found[0], writeAnswer{}, 0
	}
	servers := make([]string, len(found))
	for i, p := range found {
		servers[i] = p.Server()
	}
	return nil, failed(codeAmbiguousZone, "zone %s is served by %d servers on this status listener (%s): name one as \"server\"",
		zone, len(found), strings.Join(servers, ", ")), http.StatusBadRequest
}

// target finds the pool and parses the backend's address of a drain or an undrain.
func (v *View) target(server, zone, backend string) (Pool, netip.Addr, writeAnswer, int) {
	p, a, code := v.pool(server, zone)
	if p == nil {
		return nil, netip.Addr{}, a, code
	}
	if backend == "" {
		return nil, netip.Addr{}, failed(codeBadRequest, "want \"backend\", the backend's address"), http.StatusBadRequest
	}
	addr, err := pool.ParseAddr(backend) // as a backend line reads it: unmapped, no scope
	if err != nil {
		return nil, netip.Addr{}, failed(codeBadRequest, "backend: %v", err), http.StatusBadRequest
	}
	return p, addr, writeAnswer{}, 0
}

func failed(code, format string, args ...any) writeAnswer {
	return writeAnswer{Error: fmt.Sprintf(format, args...), Code: code}
}

// refused turns the pool's refusal into the answer and its status code.
func refused(err error) (writeAnswer, int) {
	status, code := refusal(err)
	return failed(code, "%v", err), status
}

func answer(w http.ResponseWriter, code int, a any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(a)
}
