package status

import (
	"crypto/subtle"
	_ "embed"
	"encoding/json"
	"net/http"
	"strings"
	"time"
)

//go:embed status.html
var page string

// ServeHTTP serves the page and the JSON, and passes writes to serveWrite. With a token, every
// request must carry it, as "Authorization: Bearer TOKEN"; the page takes it from its URL's
// fragment (/#token=TOKEN), which the browser never sends, so that it stays out of proxies' logs.
func (v *View) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if v == nil {
		http.Error(w, "status listener closing", http.StatusServiceUnavailable)
		return
	}
	if r.URL.Path == eventsPath {
		v.serveEvents(w, r)
		return
	}
	if r.URL.Path == poolsPath || strings.HasPrefix(r.URL.Path, poolsPath+"/") {
		v.servePools(w, r)
		return
	}
	if strings.HasPrefix(r.URL.Path, apiPrefix) {
		v.serveWrite(w, r)
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "read only: GET or HEAD; writes are POST "+apiPrefix+"...", http.StatusMethodNotAllowed)
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	authorized := v.authorized(r)
	switch r.URL.Path {
	case "/status.json":
		if !authorized {
			w.Header().Set("WWW-Authenticate", `Bearer realm="healthdns"`)
			http.Error(w, "want Authorization: Bearer TOKEN", http.StatusUnauthorized)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", " ")
		enc.Encode(v.document(time.Now()))
	case "/":
		// The page draws itself from the JSON it polls; the first is inlined, so that it shows
		// something at once (and without scripts' timers, as a headless browser's dump does).
		// Without the token it is inlined as null, and the page asks with the fragment's.
		initial := []byte("null")
		if authorized {
			initial, _ = json.Marshal(v.document(time.Now())) // escapes <, > and &: safe in a script
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Content-Security-Policy", "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src data:")
		w.Write([]byte(strings.Replace(page, "/*INITIAL*/null", string(initial), 1)))
	default:
		http.NotFound(w, r)
	}
}

// authorized says whether r carries the token, and counts a request that carries another (a
// missing one is a browser that was not given the token, not a guess).
func (v *View) authorized(r *http.Request) bool {
	if v.Token == "" {
		return true
	}
	header := r.Header.Get("Authorization")
	got, ok := strings.CutPrefix(header, "Bearer ")
	if ok && subtle.ConstantTimeCompare([]byte(strings.TrimSpace(got)), []byte(v.Token)) == 1 {
		return true
	}
	if header != "" {
		v.guard.wrongToken(r.RemoteAddr)
	}
	return false
}
