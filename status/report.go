package status

import (
	"crypto/subtle"
	"encoding/json"
	"net/http"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/healthdns/healthdns/pool"
)

// reportRequest is the body of POST /api/v1/report: a backend, or an agent on it, says how it
// is, for the zone's push check.
type reportRequest struct {
	Server  string `json:"server"`
	Zone    string `json:"zone"`
	Backend string `json:"backend"`
	Result  string `json:"result"` // pass or fail
	Output  string `json:"output"` // a line of what the node's own check said
}

// maxOutput bounds the line kept of a report's output: a log line and a cell of the page.
const maxOutput = 256

// report takes a report. Beside the listener's token it takes the zone's report token (check
// push TTL token FILE), so that a node can be given a token that reports for its zone and does
// nothing else: no drain, no fail-back, not even a read of the page.
func (v *View) report(r *http.Request, dec *json.Decoder) (writeAnswer, int) {
	var req reportRequest
	if err := decodeBody(dec, &req); err != nil {
		return failed(codeBadRequest, "%v", err), http.StatusBadRequest
	}
	if a, code, ok := v.reportAuthorized(r, req); !ok {
		return a, code
	}
	var rep pool.Report
	switch req.Result {
	case "pass":
		rep.Pass = true
	case "fail":
	default:
		return failed(codeBadRequest, "result '%s': want \"pass\" or \"fail\"", req.Result), http.StatusBadRequest
	}
	rep.Output = oneLine(req.Output)
	p, addr, a, code := v.target(req.Server, req.Zone, req.Backend)
	if p == nil {
		return a, code
	}
	up, err := p.Report(addr, rep, r.RemoteAddr)
	if err != nil {
		return refused(err)
	}
	state := "down"
	if up {
		state = "up"
	}
	return writeAnswer{OK: true, Server: p.Server(), Zone: p.Zone(), Backend: addr.String(), State: state}, http.StatusOK
}

// reportAuthorized checks a report's token: the listener's, or the report token of the zone it
// names. A wrong one counts against the client as any wrong token does; whether the zone exists
// is not told before the token is right.
func (v *View) reportAuthorized(r *http.Request, req reportRequest) (writeAnswer, int, bool) {
	header := r.Header.Get("Authorization")
	got, _ := strings.CutPrefix(header, "Bearer ")
	got = strings.TrimSpace(got)
	matches := func(token string) bool {
		return token != "" && subtle.ConstantTimeCompare([]byte(got), []byte(token)) == 1
	}
	if matches(v.Token) {
		return writeAnswer{}, 0, true
	}
	zoneToken := ""
	if p, _, _ := v.pool(req.Server, req.Zone); p != nil {
		zoneToken = p.ReportToken()
	}
	if matches(zoneToken) {
		return writeAnswer{}, 0, true
	}
	if v.Token == "" && zoneToken == "" {
		return failed(codeNoToken, "reports need a token, and neither the status listener on %s nor zone %s's push check has one: want 'check push TTL token FILE' or 'status %s token FILE'",
			v.Addr, req.Zone, v.Addr), http.StatusForbidden, false
	}
	if header != "" {
		v.guard.wrongToken(r.RemoteAddr)
	}
	return failed(codeUnauthorized, "want Authorization: Bearer TOKEN, the status listener's token or the zone's report token"), http.StatusUnauthorized, false
}

// oneLine keeps a report's output to one line of at most maxOutput bytes, whatever a script
// printed: line breaks and other control characters become spaces, so that a log line stays a
// line, and a cut never splits a character.
func oneLine(s string) string {
	s = strings.TrimSpace(strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return ' '
		}
		return r
	}, strings.ToValidUTF8(s, "\uFFFD")))
	if len(s) <= maxOutput {
		return s
	}
	cut := maxOutput
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut]
}
