package pool

import (
	"strings"
	"testing"
	"time"
)

// The value the API writes is the backend line's words, defaults left out, and every server
// reads it back as what was asked.
func TestBackendValue(t *testing.T) {
	until := time.Date(2026, 12, 24, 18, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		s    BackendSettings
		want string
	}{
		{BackendSettings{}, ""},
		{BackendSettings{Weight: 1, Priority: 100}, ""},
		{BackendSettings{Weight: 3}, "weight 3"},
		{BackendSettings{Weight: 3, Priority: 200}, "weight 3 priority 200"},
		{BackendSettings{Drain: Drain{On: true}}, "drain"},
		{BackendSettings{Priority: 50, Drain: Drain{On: true, Until: until, Reason: "kernel upgrade"}}, "priority 50 drain until 2026-12-24T18:00:00Z kernel upgrade"},
	} {
		got := BackendValue(tc.s)
		if got != tc.want {
			t.Errorf("BackendValue(%+v) = %q, want %q", tc.s, got, tc.want)
			continue
		}
		b, err := ParseBackendWords(append([]string{"10.0.0.7"}, strings.Fields(got)...))
		if err != nil {
			t.Errorf("%q does not read back: %v", got, err)
			continue
		}
		w, p := tc.s.Weight, tc.s.Priority
		if w == 0 {
			w = 1
		}
		if p == 0 {
			p = 100
		}
		if b.Weight != w || b.Priority != p || b.Drain.On != tc.s.Drain.On || b.Drain.Reason != tc.s.Drain.Reason || !b.Drain.Until.Equal(tc.s.Drain.Until) {
			t.Errorf("%q reads back as %+v, want %+v", got, b, tc.s)
		}
	}
}
