package status

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"

	"github.com/healthdns/healthdns/pool"
)

// FuzzWriteBodies posts any body to each write endpoint, with the token, on a fake pool that
// accepts or refuses: the answer is JSON, ok exactly when 200, a 4xx for the caller's mistakes,
// a 5xx only for the pool's own refusal; and a write reaches the pool only for a zone on the
// listener and a backend address that parses, with a reason that is one line of printable text.
func FuzzWriteBodies(f *testing.F) {
	for _, seed := range []struct {
		endpoint byte
		body     string
	}{
		{0, `{"zone":"APP.lan","backend":"10.0.0.1","reason":"disk","until":"2099-01-01T00:00:00Z"}`},
		{0, `{"zone":"app.lan","backend":"10.0.0.1","until":"2000-01-01T00:00:00Z"}`},
		{0, `{"zone":"app.lan","backend":"10.0.0.1","reason":"a\nb"}`},
		{0, `{"zone":"app.lan","backend":"fe80::1%eth0"}`},
		{1, `{"zone":"app.lan.","backend":"::ffff:10.0.0.2"}`},
		{1, `{"zone":"www.lan","backend":"10.0.0.1"}`},
		{1, `{"zone":"app.lan","backend":"10.0.0.1"} {}`},
		{2, `{"server":"dns://10.0.0.53:53","zone":"app.lan"}`},
		{2, `{"zone":"app.lan","untill":"x"}`},
		{2, `[]`},
	} {
		for refusal := range byte(5) {
			f.Add(seed.endpoint, seed.body, refusal)
		}
	}
	endpoints := []string{"drain", "undrain", "failback"}
	// A pool's refusals carry their reason; the wrapping gives the fake's theirs.
	refusals := []error{nil, fmt.Errorf("no such backend: %w", &pool.RefusedError{Kind: pool.NotFound}),
		fmt.Errorf("drained already: %w", &pool.RefusedError{Kind: pool.Conflict}),
		fmt.Errorf("the pool is starting: %w", &pool.RefusedError{Kind: pool.Unavailable}), errors.New("the pool is stopping")}
	f.Fuzz(func(t *testing.T, endpoint byte, body string, refusal byte) {
		fake, v := fakeView()
		fake.refuse = refusals[int(refusal)%len(refusals)]
		name := endpoints[int(endpoint)%len(endpoints)]
		w := post(v, apiPrefix+name, "Bearer "+apiToken, body)
		var a writeAnswer
		if ct := w.Header().Get("Content-Type"); ct != "application/json" {
			t.Fatalf("%s %q: content type %q", name, body, ct)
		}
		if err := json.Unmarshal(w.Body.Bytes(), &a); err != nil {
			t.Fatalf("%s %q: the answer is no JSON object: %v\n%s", name, body, err, w.Body)
		}
		reached := len(fake.writes) > 0
		switch {
		case w.Code == http.StatusOK:
			if !a.OK || a.Error != "" || fake.refuse != nil || !reached {
				t.Fatalf("%s %q: 200 with %+v; the pool got %q", name, body, a, fake.writes)
			}
		case w.Code >= 400 && w.Code < 500:
			if a.OK || a.Error == "" {
				t.Fatalf("%s %q: %d with %+v", name, body, w.Code, a)
			}
		case w.Code >= 500 && w.Code < 600:
			if !reached || fake.refuse == nil {
				t.Fatalf("%s %q: %d, but the pool refused nothing (%q)", name, body, w.Code, fake.writes)
			}
		default:
			t.Fatalf("%s %q: status %d", name, body, w.Code)
		}
		if !reached {
			return
		}
		if len(fake.writes) != 1 || !strings.HasPrefix(fake.writes[0], name+" ") {
			t.Fatalf("%s %q: the pool got %q", name, body, fake.writes)
		}
		// The body was read strictly to reach the pool; read loosely here, it says the same.
		var req drainRequest
		if err := json.Unmarshal([]byte(body), &req); err != nil {
			t.Fatalf("%s %q reached the pool, but does not read: %v", name, body, err)
		}
		if zone := strings.TrimSuffix(strings.ToLower(req.Zone), ".") + "."; zone != fake.zone {
			t.Fatalf("%s %q reached the pool of %s", name, body, fake.zone)
		}
		if name == "failback" {
			return
		}
		addr, err := pool.ParseAddr(req.Backend)
		if err != nil || !strings.HasPrefix(fake.writes[0], name+" "+addr.String()+" ") {
			t.Fatalf("%s %q: the pool got %q for backend %q (%v)", name, body, fake.writes, req.Backend, err)
		}
		if name == "drain" && (len(req.Reason) > pool.MaxDrainReason || !utf8.ValidString(req.Reason) || strings.ContainsFunc(req.Reason, unicode.IsControl)) {
			t.Fatalf("drain %q: the pool got reason %q", body, req.Reason)
		}
	})
}
