package healthdns

import (
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/coredns/caddy"

	"github.com/healthdns/healthdns/event"
	"github.com/healthdns/healthdns/health"
	"github.com/healthdns/healthdns/notify"
)

const notifyForm = "want 'notify exec PATH [ARGS...] [timeout DURATION] [events KIND...]' or 'notify http URL [token FILE] [timeout DURATION] [events KIND...]'"

// parseNotify reads a `notify` line. The script is checked and the token read here, as a
// check's script and the status token are, so that a line that cannot work fails startup at
// its line rather than at the first event.
func parseNotify(c *caddy.Controller, args []string) (notify.Target, error) {
	t := notify.Target{Timeout: notify.DefaultTimeout}
	if len(args) < 2 {
		return t, c.Errf("%s", notifyForm)
	}
	t.Channel, args = args[0], args[1:]
	switch t.Channel {
	case notify.Exec:
		t.Path = args[0]
		if err := health.ValidateScript(t.Path); err != nil {
			return t, c.Errf("notify exec %s: %v", t.Path, err)
		}
		// The script's arguments run to the first option word: a script cannot be given the
		// words timeout or events themselves.
		end := slices.IndexFunc(args[1:], func(a string) bool { return a == "timeout" || a == "events" })
		if end < 0 {
			end = len(args) - 1
		}
		t.Args, args = args[1:1+end], args[1+end:]
	case notify.HTTP:
		u, err := url.Parse(args[0])
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return t, c.Errf("notify http '%s': want an http:// or https:// URL", args[0])
		}
		t.URL, args = args[0], args[1:]
	default:
		return t, c.Errf("unknown notify channel '%s'; %s", t.Channel, notifyForm)
	}
	seen := map[string]bool{}
	for len(args) > 0 {
		opt := args[0]
		if seen[opt] {
			return t, c.Errf("'%s' given twice; %s", opt, notifyForm)
		}
		seen[opt] = true
		switch {
		case opt == "token" && t.Channel == notify.HTTP:
			if len(args) < 2 {
				return t, c.Errf("'token' wants a FILE; %s", notifyForm)
			}
			token, err := readStatusToken(args[1])
			if err != nil {
				return t, c.Errf("notify http token: %v", err)
			}
			if !strings.HasPrefix(t.URL, "https:") && !isLoopbackURL(t.URL) {
				log.Warningf("%s:%d - notify http %s: plain HTTP to another host: the bearer token travels in cleartext", c.File(), c.Line(), t.URL)
			}
			t.Token, args = token, args[2:]
		case opt == "timeout":
			if len(args) < 2 {
				return t, c.Errf("'timeout' wants a DURATION; %s", notifyForm)
			}
			d, err := time.ParseDuration(args[1])
			if err != nil || d < 10*time.Millisecond {
				return t, c.Errf("invalid notify timeout '%s': want a duration of at least 10ms, such as 5s", args[1])
			}
			t.Timeout, args = d, args[2:]
		case opt == "events":
			if len(args) < 2 {
				return t, c.Errf("'events' wants at least one KIND: %s", kindNames())
			}
			for _, k := range args[1:] {
				if !slices.Contains(event.Kinds, event.Kind(k)) {
					return t, c.Errf("unknown event kind '%s'; want %s", k, kindNames())
				}
				t.Kinds = append(t.Kinds, event.Kind(k))
			}
			args = nil
		default:
			return t, c.Errf("unknown notify %s option '%s'; %s", t.Channel, opt, notifyForm)
		}
	}
	return t, nil
}

func kindNames() string {
	names := make([]string, len(event.Kinds))
	for i, k := range event.Kinds {
		names[i] = string(k)
	}
	return strings.Join(names, ", ")
}

func isLoopbackURL(raw string) bool {
	u, err := url.Parse(raw)
	if err != nil {
		return false
	}
	if u.Hostname() == "localhost" {
		return true
	}
	a, err := netip.ParseAddr(u.Hostname())
	return err == nil && a.Unmap().IsLoopback()
}
