package status

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/healthdns/healthdns/pool"
)

// poolsPath is the pools' resource: GET it for every pool shown, GET poolsPath/ZONE for one,
// and PUT or DELETE poolsPath/ZONE/backends/ADDRESS to write a backend of a zone whose list is
// in etcd.
const poolsPath = apiPrefix + "pools"

// BackendWriter is what the API needs of a pool to read and write its backends' etcd keys
// (pool.Pool). A pool that is not one answers every backend write as read-only.
type BackendWriter interface {
	Backend(ctx context.Context, addr netip.Addr) (pool.BackendKey, error)
	SetBackend(ctx context.Context, addr netip.Addr, s pool.BackendSettings, revision int64, by string) (pool.BackendKey, error)
	RemoveBackend(ctx context.Context, addr netip.Addr, revision int64, by string) (pool.BackendKey, error)
}

// PoolsDoc is GET /api/v1/pools: /status.json's pools and its version.
type PoolsDoc struct {
	Version int       `json:"version"`
	Pools   []PoolDoc `json:"pools"`
}

// BackendRequest is the body of PUT /api/v1/pools/ZONE/backends/ADDRESS: the backend's whole
// line, defaults for what it leaves out.
type BackendRequest struct {
	Weight   uint32 `json:"weight,omitempty"`
	Priority uint8  `json:"priority,omitempty"`
	Drain    bool   `json:"drain,omitempty"`
	Reason   string `json:"reason,omitempty"` // of the drain
	Until    string `json:"until,omitempty"`  // of the drain, RFC 3339
}

// BackendAnswer is a backend as the API reads and writes it: its etcd key (for a zone whose list
// is in etcd), what the key says, and the backend's status.
type BackendAnswer struct {
	OK       bool        `json:"ok,omitempty"` // a write's answer
	Server   string      `json:"server"`
	Zone     string      `json:"zone"`
	Backend  string      `json:"backend"`
	Key      string      `json:"key,omitempty"`
	Value    *string     `json:"value,omitempty"`
	Revision int64       `json:"revision,omitempty"`
	Weight   uint32      `json:"weight,omitempty"`
	Priority uint8       `json:"priority,omitempty"`
	Drain    bool        `json:"drain,omitempty"`
	Reason   string      `json:"reason,omitempty"`
	Until    *time.Time  `json:"until,omitempty"`
	Removed  bool        `json:"removed,omitempty"`
	Status   *BackendDoc `json:"status,omitempty"` // as /status.json shows it; absent while not listed
}

// staleAnswer is a write refused because the key changed: the error and what is there now.
type staleAnswer struct {
	Error   string         `json:"error"`
	Code    string         `json:"code"`
	Current *BackendAnswer `json:"current"` // null when the key is gone
}

func (v *View) servePools(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	rest, _ := strings.CutPrefix(r.URL.Path, poolsPath)
	rest = strings.TrimPrefix(rest, "/")
	parts := strings.Split(rest, "/")
	switch {
	case rest == "":
		v.readPools(w, r, func() any {
			doc := v.document(time.Now())
			return PoolsDoc{Version: doc.Version, Pools: doc.Pools}
		})
	case len(parts) == 1:
		v.readPools(w, r, func() any {
			shown, a, code := v.shown(r.URL.Query().Get("server"), parts[0])
			if shown == nil {
				return statusAnswer{a, code}
			}
			return poolDoc(*shown, shown.Pool.Status())
		})
	case len(parts) == 3 && parts[1] == "backends":
		v.serveBackend(w, r, parts[0], parts[2])
	default:
		answer(w, http.StatusNotFound, failed(codeNotFound, "no endpoint %s: want %s, %s/ZONE or %s/ZONE/backends/ADDRESS", r.URL.Path, poolsPath, poolsPath, poolsPath))
	}
}

// statusAnswer is a refusal found while building a read's answer.
type statusAnswer struct {
	writeAnswer
	status int
}

// readPools answers a GET with the document read makes, as /status.json is read: the token.
func (v *View) readPools(w http.ResponseWriter, r *http.Request, read func() any) {
	if r.Method != http.MethodGet {
		w.Header().Set("Allow", http.MethodGet)
		answer(w, http.StatusMethodNotAllowed, failed(codeMethod, "%s takes GET, not %s", r.URL.Path, r.Method))
		return
	}
	if !v.authorized(r) {
		w.Header().Set("WWW-Authenticate", `Bearer realm="healthdns"`)
		answer(w, http.StatusUnauthorized, failed(codeUnauthorized, "want Authorization: Bearer TOKEN, the status listener's token"))
		return
	}
	doc := read()
	if refused, ok := doc.(statusAnswer); ok {
		answer(w, refused.status, refused.writeAnswer)
		return
	}
	answer(w, http.StatusOK, doc)
}

// shown finds the pool of zone on this listener, as the writes do.
func (v *View) shown(server, zone string) (*Shown, writeAnswer, int) {
	p, a, code := v.pool(server, zone)
	if p == nil {
		return nil, a, code
	}
	for i := range v.Pools {
		if v.Pools[i].Pool == p {
			return &v.Pools[i], writeAnswer{}, 0
		}
	}
	return nil, failed(codeZoneNotFound, "no zone %s on this status listener", zone), http.StatusNotFound
}

// serveBackend reads (GET), writes (PUT) or removes (DELETE) one backend.
func (v *View) serveBackend(w http.ResponseWriter, r *http.Request, zone, address string) {
	switch r.Method {
	case http.MethodGet:
		if !v.authorized(r) {
			w.Header().Set("WWW-Authenticate", `Bearer realm="healthdns"`)
			answer(w, http.StatusUnauthorized, failed(codeUnauthorized, "want Authorization: Bearer TOKEN, the status listener's token"))
			return
		}
	case http.MethodPut, http.MethodDelete:
		if !v.writeAllowed(w, r) {
			return
		}
	default:
		w.Header().Set("Allow", "GET, PUT, DELETE")
		answer(w, http.StatusMethodNotAllowed, failed(codeMethod, "%s takes GET, PUT or DELETE, not %s", r.URL.Path, r.Method))
		return
	}
	shown, a, code := v.shown(r.URL.Query().Get("server"), zone)
	if shown == nil {
		answer(w, code, a)
		return
	}
	addr, err := pool.ParseAddr(address)
	if err != nil {
		answer(w, http.StatusBadRequest, failed(codeBadRequest, "backend: %v", err))
		return
	}
	bw, ok := shown.Pool.(BackendWriter)
	if !ok {
		answer(w, http.StatusConflict, failed(codeReadOnly, "zone %s: its backends are not written through the API", shown.Pool.Zone()))
		return
	}
	switch r.Method {
	case http.MethodGet:
		v.getBackend(w, r, shown, bw, addr)
	case http.MethodPut:
		v.putBackend(w, r, shown, bw, addr)
	case http.MethodDelete:
		v.deleteBackend(w, r, shown, bw, addr)
	}
}

func (v *View) getBackend(w http.ResponseWriter, r *http.Request, shown *Shown, bw BackendWriter, addr netip.Addr) {
	st := backendStatus(shown, addr)
	k, err := bw.Backend(r.Context(), addr)
	var re *pool.RefusedError
	switch {
	case err == nil:
	case errors.As(err, &re) && (re.Kind == pool.ReadOnly || re.Kind == pool.NotFound) && st != nil:
		// Listed by the Corefile or a file: its status, and no key.
		answer(w, http.StatusOK, BackendAnswer{Server: shown.Pool.Server(), Zone: shown.Pool.Zone(), Backend: addr.String(), Status: st})
		return
	case errors.As(err, &re) && re.Kind == pool.ReadOnly:
		answer(w, http.StatusNotFound, failed(codeBackendNotFound, "zone %s has no backend %s", shown.Pool.Zone(), addr))
		return
	default:
		status, code := refusal(err)
		answer(w, status, failed(code, "%v", err))
		return
	}
	a := backendAnswer(shown, addr, k)
	a.Status = st
	w.Header().Set("ETag", etag(k.Revision))
	answer(w, http.StatusOK, a)
}

func (v *View) putBackend(w http.ResponseWriter, r *http.Request, shown *Shown, bw BackendWriter, addr netip.Addr) {
	revision, ok := ifMatch(w, r)
	if !ok {
		return
	}
	body, ok := readBody(w, r)
	if !ok {
		return
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	var req BackendRequest
	if err := decodeBody(dec, &req); err != nil {
		answer(w, http.StatusBadRequest, failed(codeBadRequest, "%v", err))
		return
	}
	s := pool.BackendSettings{Weight: req.Weight, Priority: req.Priority, Drain: pool.Drain{On: req.Drain, Reason: req.Reason}}
	if !req.Drain && (req.Reason != "" || req.Until != "") {
		answer(w, http.StatusBadRequest, failed(codeBadRequest, "reason and until are the drain's: want \"drain\": true with them"))
		return
	}
	if req.Until != "" {
		until, err := time.Parse(time.RFC3339, req.Until)
		if err != nil {
			answer(w, http.StatusBadRequest, failed(codeBadRequest, "until '%s': want an RFC 3339 time such as 2026-12-24T18:00:00Z", req.Until))
			return
		}
		s.Drain.Until = until
	}
	k, err := bw.SetBackend(r.Context(), addr, s, revision, r.RemoteAddr)
	if err != nil {
		v.refuseBackend(w, shown, addr, err)
		return
	}
	a := backendAnswer(shown, addr, k)
	a.OK = true
	a.Status = backendStatus(shown, addr)
	w.Header().Set("ETag", etag(k.Revision))
	answer(w, http.StatusOK, a)
}

func (v *View) deleteBackend(w http.ResponseWriter, r *http.Request, shown *Shown, bw BackendWriter, addr netip.Addr) {
	if r.Header.Get("If-Match") == "" {
		answer(w, http.StatusPreconditionRequired, failed(codePreconditionReq,
			"removing backend %s wants If-Match with its revision (the ETag of GET %s), so that a change made since is not removed blindly", addr, r.URL.Path))
		return
	}
	revision, ok := ifMatch(w, r)
	if !ok {
		return
	}
	k, err := bw.RemoveBackend(r.Context(), addr, revision, r.RemoteAddr)
	if err != nil {
		v.refuseBackend(w, shown, addr, err)
		return
	}
	a := backendAnswer(shown, addr, k)
	a.OK, a.Removed = true, true
	answer(w, http.StatusOK, a)
}

// refuseBackend answers a refused backend write; a stale one with the key as it is now.
func (v *View) refuseBackend(w http.ResponseWriter, shown *Shown, addr netip.Addr, err error) {
	status, code := refusal(err)
	var se *pool.StaleError
	if !errors.As(err, &se) {
		answer(w, status, failed(code, "%v", err))
		return
	}
	sa := staleAnswer{Error: err.Error(), Code: code}
	if se.Current.Exists {
		current := backendAnswer(shown, addr, se.Current)
		sa.Current = &current
		w.Header().Set("ETag", etag(se.Current.Revision))
	}
	answer(w, status, sa)
}

// backendAnswer is what key k says of backend addr.
func backendAnswer(shown *Shown, addr netip.Addr, k pool.BackendKey) BackendAnswer {
	value := k.Value
	a := BackendAnswer{Server: shown.Pool.Server(), Zone: shown.Pool.Zone(), Backend: addr.String(), Key: k.Key, Value: &value, Revision: k.Revision}
	// The key was written by the API or as etcdctl would: read as every server reads it.
	if b, err := pool.ParseBackendWords(append([]string{addr.String()}, strings.Fields(k.Value)...)); err == nil {
		a.Weight, a.Priority = b.Weight, b.Priority
		a.Drain, a.Reason, a.Until = b.Drain.On, b.Drain.Reason, timePtr(b.Drain.Until)
	}
	return a
}

// backendStatus is backend addr as /status.json shows it, or nil while the pool does not list it.
func backendStatus(shown *Shown, addr netip.Addr) *BackendDoc {
	doc := poolDoc(*shown, shown.Pool.Status())
	for i := range doc.Backends {
		if doc.Backends[i].Address == addr.String() {
			return &doc.Backends[i]
		}
	}
	return nil
}

// etag is a key's revision as an entity tag; If-Match sends it back.
func etag(revision int64) string { return `"` + strconv.FormatInt(revision, 10) + `"` }

// ifMatch reads the revision a write names: 0 (the key must not exist) without If-Match.
func ifMatch(w http.ResponseWriter, r *http.Request) (int64, bool) {
	h := strings.TrimSpace(r.Header.Get("If-Match"))
	if h == "" {
		return 0, true
	}
	n, err := strconv.ParseInt(strings.Trim(strings.TrimPrefix(h, "W/"), `"`), 10, 64)
	if err != nil || n <= 0 {
		answer(w, http.StatusBadRequest, failed(codeBadRequest, "If-Match %s: want the ETag of the backend's GET, its revision, such as \"42\"", h))
		return 0, false
	}
	return n, true
}
