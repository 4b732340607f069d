package healthdns

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/coredns/caddy"
	"github.com/miekg/dns"

	"github.com/healthdns/healthdns/health"
	"github.com/healthdns/healthdns/pool"
)

// The values of the healthdns block's properties, each parsed where its errors can name it.

// applyTLS gives every https check of the block the block's tls_ca and tls_insecure, which mean
// nothing without one.
func applyTLS(c *caddy.Controller, cfg *poolConfig, ca string, insecure bool, lines map[string]int) error {
	https := false
	for i := range cfg.Checks {
		if cfg.Checks[i].Kind == health.HTTPS {
			cfg.Checks[i].TLSCA, cfg.Checks[i].TLSInsecure = ca, insecure
			https = true
		}
	}
	switch {
	case !https && ca != "":
		return errAt(c, lines["tls_ca"], "tls_ca without an https check; want 'check https PORT ...' in the block")
	case !https && insecure:
		return errAt(c, lines["tls_insecure"], "tls_insecure without an https check; want 'check https PORT ...' in the block")
	case ca != "" && insecure:
		return errAt(c, lines["tls_insecure"], "tls_insecure with tls_ca: give one; tls_insecure verifies nothing")
	}
	return nil
}

// parseBackend reads a Corefile backend line; pool.ParseBackendWords parses its words, as it does a
// backends_file line's and an etcd key's.
func parseBackend(c *caddy.Controller, args []string) (pool.Backend, error) {
	b, err := pool.ParseBackendWords(args)
	if err != nil {
		return b, c.Errf("%v", err)
	}
	return b, nil
}

// parseHashPrefix reads 'hash_prefix V4LEN V6LEN'.
func parseHashPrefix(c *caddy.Controller, args []string) ([2]int, error) {
	if len(args) != 2 {
		return [2]int{}, c.Errf("want 'hash_prefix V4LEN V6LEN', such as 'hash_prefix 24 56'")
	}
	v4, err4 := strconv.Atoi(args[0])
	v6, err6 := strconv.Atoi(args[1])
	if err4 != nil || v4 < 0 || v4 > 32 {
		return [2]int{}, c.Errf("invalid hash_prefix IPv4 length '%s': want an integer from 0 to 32", args[0])
	}
	if err6 != nil || v6 < 0 || v6 > 128 {
		return [2]int{}, c.Errf("invalid hash_prefix IPv6 length '%s': want an integer from 0 to 128", args[1])
	}
	return [2]int{v4, v6}, nil
}

func parseAddr(c *caddy.Controller, s string) (netip.Addr, error) {
	addr, err := pool.ParseAddr(s)
	if err != nil {
		return addr, c.Errf("%v", err)
	}
	return addr, nil
}

const checkForms = "'icmp', 'tcp PORT', 'http PORT [PATH] [expect CODES] [body TEXT | body_exact TEXT] [host NAME]', 'https PORT ...', 'exec PATH [ARGS...]' or 'push TTL [token FILE]'"

// minPushTTL is the shortest TTL of a push check: a node's timer that reports more often than
// once a second is a probe turned inside out, and a TTL shorter than a report's trip through a
// busy network would flap.
const minPushTTL = time.Second

// parsePushCheck reads 'push TTL [token FILE]': the check, and its report token ("" for none).
func parsePushCheck(c *caddy.Controller, args []string) (health.Check, string, error) {
	const form = "want 'check push TTL [token FILE]'"
	if len(args) != 1 && len(args) != 3 {
		return health.Check{}, "", c.Errf("%s", form)
	}
	ttl, err := time.ParseDuration(args[0])
	if err != nil || ttl < minPushTTL {
		return health.Check{}, "", c.Errf("invalid push TTL '%s': want a duration of at least %s, such as 30s, longer than the node's report interval", args[0], minPushTTL)
	}
	chk := health.Check{Kind: health.Push, TTL: ttl}
	if len(args) == 1 {
		return chk, "", nil
	}
	if args[1] != "token" {
		return chk, "", c.Errf("unknown push check option '%s'; %s", args[1], form)
	}
	token, err := readStatusToken(args[2])
	if err != nil {
		return chk, "", c.Errf("check push token: %v", err)
	}
	return chk, token, nil
}

func parseCheck(c *caddy.Controller, args []string) (health.Check, error) {
	if len(args) == 0 {
		return health.Check{}, c.Errf("want 'check' and one of %s", checkForms)
	}
	kind, rest := args[0], args[1:]
	switch kind {
	case "icmp":
		if len(rest) != 0 {
			return health.Check{}, c.Errf("want 'check icmp' alone; options such as '%s' are for http and https checks", rest[0])
		}
		return health.Check{Kind: health.ICMP}, nil
	case "tcp":
		if len(rest) != 1 {
			if len(rest) > 1 {
				return health.Check{}, c.Errf("want 'check tcp PORT'; options such as '%s' are for http and https checks", rest[1])
			}
			return health.Check{}, c.Errf("want 'check tcp PORT'")
		}
		port, err := parseInt(c, "tcp port", rest, 1, 65535)
		return health.Check{Kind: health.TCP, Port: uint16(port)}, err
	case "http", "https":
		return parseHTTPCheck(c, kind, rest)
	case "exec":
		if len(rest) == 0 {
			return health.Check{}, c.Errf("want 'check exec PATH [ARGS...]'")
		}
		if !filepath.IsAbs(rest[0]) {
			return health.Check{}, c.Errf("invalid exec path '%s': want an absolute path; scripts run directly, never through a shell or $PATH", rest[0])
		}
		return health.Check{Kind: health.Exec, Command: rest[0], Args: health.JoinArgs(rest[1:])}, nil
	}
	return health.Check{}, c.Errf("unknown check '%s'; want %s", strings.Join(args, " "), checkForms)
}

// parseHTTPCheck reads 'http PORT [PATH] [expect CODES] [body TEXT | body_exact TEXT] [host NAME]'
// after its kind.
func parseHTTPCheck(c *caddy.Controller, kind string, args []string) (health.Check, error) {
	form := fmt.Sprintf("'check %s PORT [PATH] [expect CODES] [body TEXT | body_exact TEXT] [host NAME]'", kind)
	if len(args) == 0 {
		return health.Check{}, c.Errf("want %s", form)
	}
	port, err := parseInt(c, kind+" port", args[:1], 1, 65535)
	if err != nil {
		return health.Check{}, err
	}
	chk := health.Check{Kind: health.HTTP, Port: uint16(port), Path: "/"}
	if kind == "https" {
		chk.Kind = health.HTTPS
	}
	args = args[1:]
	if len(args) > 0 && strings.HasPrefix(args[0], "/") {
		if strings.ContainsAny(args[0], " \t\r\n") || !utf8.ValidString(args[0]) {
			return chk, c.Errf("invalid path %q: want a path such as /healthz, without spaces", args[0])
		}
		chk.Path, args = args[0], args[1:]
	}
	seen := map[string]bool{}
	for len(args) > 0 {
		opt := args[0]
		switch {
		case strings.HasPrefix(opt, "/"):
			return chk, c.Errf("path '%s' must come right after the port; want %s", opt, form)
		case opt != "expect" && opt != "body" && opt != "body_exact" && opt != "host":
			return chk, c.Errf("unknown %s check option '%s'; want %s", kind, opt, form)
		case len(args) < 2:
			return chk, c.Errf("'%s' wants a value; want %s", opt, form)
		}
		if seen[opt] {
			return chk, c.Errf("'%s' given twice in one check", opt)
		}
		if (opt == "body" && seen["body_exact"]) || (opt == "body_exact" && seen["body"]) {
			return chk, c.Errf("'body' and 'body_exact' in one check: give one; body finds TEXT anywhere in the body, body_exact wants the body to be TEXT")
		}
		seen[opt] = true
		val := args[1]
		switch opt {
		case "expect":
			if err := health.CheckStatusCodes(val); err != nil {
				return chk, c.Err(err.Error())
			}
			chk.Expect = val
		case "body":
			if val == "" {
				return chk, c.Errf("invalid body '': want the text the body must hold")
			}
			chk.Body = val
		case "body_exact":
			if val == "" || strings.TrimSpace(val) != val {
				return chk, c.Errf("invalid body_exact %q: want the text the whole body must be, without white space around it (the body's own is trimmed)", val)
			}
			chk.Body, chk.BodyExact = val, true
		case "host":
			if _, ok := dns.IsDomainName(val); !ok || strings.ContainsAny(val, " /:") {
				return chk, c.Errf("invalid host '%s': want a host name such as app.lan", val)
			}
			chk.Host = strings.TrimSuffix(val, ".")
		}
		args = args[2:]
	}
	return chk, nil
}

func parseDuration(c *caddy.Controller, name string, args []string, floor time.Duration) (time.Duration, error) {
	if len(args) != 1 {
		return 0, c.Errf("want '%s DURATION'", name)
	}
	d, err := time.ParseDuration(args[0])
	if err != nil || d <= 0 {
		return 0, c.Errf("invalid %s '%s': want a positive duration such as 500ms or 2s", name, args[0])
	}
	if d < floor {
		return 0, c.Errf("invalid %s '%s': want at least %s", name, args[0], floor)
	}
	return d, nil
}

func parseInt(c *caddy.Controller, name string, args []string, lo, hi int) (int, error) {
	if len(args) != 1 {
		return 0, c.Errf("want '%s N'", name)
	}
	n, err := strconv.Atoi(args[0])
	if err != nil || n < lo || n > hi {
		return 0, c.Errf("invalid %s '%s': want an integer from %d to %d", name, args[0], lo, hi)
	}
	return n, nil
}

func parseAllDown(c *caddy.Controller, args []string) (pool.AllDownMode, error) {
	if len(args) == 1 {
		for m := pool.AllDownServeAll; m <= pool.AllDownFallthrough; m++ {
			if args[0] == m.String() {
				return m, nil
			}
		}
	}
	return 0, c.Errf("invalid all_down '%s': want serve_all, servfail or fallthrough", strings.Join(args, " "))
}

func parseNS(c *caddy.Controller, args []string) (string, []netip.Addr, error) {
	if len(args) < 2 {
		return "", nil, c.Errf("want 'ns NAME ADDRESS...'")
	}
	name := strings.ToLower(dns.Fqdn(args[0]))
	if _, ok := dns.IsDomainName(name); !ok {
		return "", nil, c.Errf("invalid ns name '%s'", args[0])
	}
	var addrs []netip.Addr
	for _, a := range args[1:] {
		addr, err := parseAddr(c, a)
		if err != nil {
			return "", nil, err
		}
		addrs = append(addrs, addr)
	}
	return name, addrs, nil
}

// minStateMaxAge is the shortest max_age of a state file: it is saved again every tenth of it,
// and a restart takes seconds.
const minStateMaxAge = 10 * time.Second

// parseState reads 'state FILE [max_age DURATION]'. FILE's directory must exist (systemd's
// StateDirectory makes it), so that a typo fails the Corefile rather than every save.
func parseState(c *caddy.Controller, args []string) (pool.State, error) {
	st := pool.State{MaxAge: pool.DefaultStateMaxAge}
	switch {
	case len(args) == 3 && args[1] == "max_age":
		var err error
		if st.MaxAge, err = parseDuration(c, "state max_age", args[2:], minStateMaxAge); err != nil {
			return st, err
		}
	case len(args) != 1:
		return st, c.Errf("want 'state FILE [max_age DURATION]'")
	}
	st.Path = filepath.Clean(args[0])
	dir := filepath.Dir(st.Path)
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
		return st, c.Errf("state %s: its directory %s does not exist (with systemd, StateDirectory= makes it)", st.Path, dir)
	}
	return st, nil
}
