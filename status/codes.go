package status

import (
	"errors"
	"net/http"

	"github.com/healthdns/healthdns/pool"
)

// The API's error codes: the "code" beside every "error", for a client to branch on. The texts
// may change; a code, once published, keeps its meaning (README, "API").
const (
	codeBadRequest      = "bad_request"           // 400: a body, a field or a path that does not read
	codeUnauthorized    = "unauthorized"          // 401: a missing or wrong token
	codeNoToken         = "no_token"              // 403: the listener has no token, and so takes no writes
	codeNotFound        = "not_found"             // 404: no such endpoint
	codeZoneNotFound    = "zone_not_found"        // 404
	codeBackendNotFound = "backend_not_found"     // 404
	codeMethod          = "method_not_allowed"    // 405
	codeAmbiguousZone   = "ambiguous_zone"        // 400: several servers show the zone; name one
	codeConflict        = "conflict"              // 409: the write does not apply to the state it finds
	codeReadOnly        = "read_only"             // 409: the backend is listed where the API does not write
	codeStale           = "stale_revision"        // 409: If-Match names a revision the key no longer has
	codeTooLarge        = "too_large"             // 413
	codePreconditionReq = "precondition_required" // 428: a change of an existing key without If-Match
	codeUnavailable     = "unavailable"           // 503: the zone is being replaced, or its etcd is out of reach
	codeInternal        = "internal"              // 500
)

// refusal maps the pool's refusal of a write to its HTTP status and code.
func refusal(err error) (status int, code string) {
	var se *pool.StaleError
	if errors.As(err, &se) {
		return http.StatusConflict, codeStale
	}
	var re *pool.RefusedError
	if !errors.As(err, &re) {
		return http.StatusInternalServerError, codeInternal
	}
	switch re.Kind {
	case pool.NotFound:
		return http.StatusNotFound, codeBackendNotFound
	case pool.Conflict:
		return http.StatusConflict, codeConflict
	case pool.Unavailable:
		return http.StatusServiceUnavailable, codeUnavailable
	case pool.ReadOnly:
		return http.StatusConflict, codeReadOnly
	case pool.Invalid:
		return http.StatusBadRequest, codeBadRequest
	}
	return http.StatusInternalServerError, codeInternal
}
