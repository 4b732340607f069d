package notify

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/healthdns/healthdns/event"
	"github.com/healthdns/healthdns/health"
)

// runScript returns t's delivery: a run of its script per event, as an exec check runs one
// (health.RunScript: no shell, a bare environment, its process group killed when it ends),
// with the event's JSON on its standard input and its fields in the environment. A script is
// not run again when it fails: what it does (restart a service, page someone) may not be safe
// to do twice.
func runScript(t Target, failures prometheus.Counter) func(context.Context, event.Event) error {
	return func(stop context.Context, e event.Event) error {
		ctx, cancel := context.WithTimeout(stop, t.Timeout)
		defer cancel()
		err := health.RunScript(ctx, t.Path, Expand(t.Args, e), Env(e), e.JSON())
		switch {
		case err == nil || stop.Err() != nil:
			return err
		case errors.Is(err, context.DeadlineExceeded):
			err = fmt.Errorf("killed after its timeout of %s", t.Timeout)
		}
		failures.Inc()
		return err
	}
}

// Expand returns args with {zone} {backend} {event} {state} {group} replaced by the event's.
func Expand(args []string, e event.Event) []string {
	r := strings.NewReplacer("{zone}", e.Zone, "{backend}", e.Backend, "{event}", string(e.Kind), "{state}", State(e), "{group}", Group(e))
	out := make([]string, len(args))
	for i, a := range args {
		out[i] = r.Replace(a)
	}
	return out
}

// Env is the event in a script's environment (README, "notify exec"): the fields a script
// most often tests, so that a shell script needs no JSON parser. Empty fields are left out.
func Env(e event.Event) []string {
	vars := []struct{ name, value string }{
		{"HEALTHDNS_EVENT", string(e.Kind)},
		{"HEALTHDNS_SEQ", strconv.FormatUint(e.Seq, 10)},
		{"HEALTHDNS_TIME", e.Time.UTC().Format("2006-01-02T15:04:05.000Z07:00")},
		{"HEALTHDNS_SERVER", e.Server},
		{"HEALTHDNS_ZONE", e.Zone},
		{"HEALTHDNS_STATE", State(e)},
		{"HEALTHDNS_BACKEND", e.Backend},
		{"HEALTHDNS_GROUP", Group(e)},
		{"HEALTHDNS_FAMILY", e.Family},
		{"HEALTHDNS_REASON", e.Reason},
		{"HEALTHDNS_BY", e.By},
		{"HEALTHDNS_ERROR", e.Error},
		{"HEALTHDNS_SOURCE", e.Source},
	}
	env := make([]string, 0, len(vars))
	for _, v := range vars {
		if v.value != "" {
			env = append(env, v.name+"="+v.value)
		}
	}
	return env
}
