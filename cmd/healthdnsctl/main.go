// Command healthdnsctl drives healthdns from an operator's shell through a status listener's
// API (package client): the status as a table, drains, undrains, fail-backs, the backends of a
// zone whose list is in etcd, a node's own reports, the live events, and the check of a
// Corefile before a reload.
//
// Exit codes, for scripts: 0 done; 1 the server refused (its code is printed), or the Corefile
// does not parse; 2 a usage error; 3 the server cannot be reached (connection, TLS, timeout);
// 4 the coredns binary for `check` cannot be run.
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/healthdns/healthdns/client"
)

const (
	exitOK          = 0
	exitRefused     = 1
	exitUsage       = 2
	exitUnreachable = 3
	exitNoCoreDNS   = 4
)

const usage = `usage: healthdnsctl [flags] COMMAND [ARGS] [flags]

commands:
  status [ZONE]                      every pool's backends as a table (--json: the document)
  drain ZONE ADDR [--until T] [--reason R]
                                     take a backend out of the answers; T is RFC 3339 or a duration (2h)
  undrain ZONE ADDR                  lift a drain set through the API
  failback ZONE                      serve the highest healthy priority group again
  backend get ZONE ADDR              a backend, with its etcd key and revision
  backend set ZONE ADDR [--weight W] [--priority P] [--drain[=false]] [--reason R] [--until T]
                                     add or change a backend of a zone with backends_etcd
  backend rm ZONE ADDR               remove a backend of a zone with backends_etcd
  watch                              follow the events as they come
  report ZONE ADDR pass|fail [--output TEXT]
                                     a node's verdict on itself, for 'check push'
  check FILE [--coredns PATH]        parse a Corefile as coredns would start it (runs coredns -healthdns-check;
                                     PATH also from HEALTHDNS_COREDNS, else coredns-healthdns or coredns
                                     beside healthdnsctl, else coredns on PATH)

flags (before or after the command):
  --addr ADDR        the status listener: HOST:PORT or https://HOST:PORT (env HEALTHDNS_ADDR; default 127.0.0.1:8053)
  --token-file FILE  the listener's token (env HEALTHDNS_TOKEN_FILE)
  --cacert FILE      the CA of a listener with tls (env HEALTHDNS_CACERT)
  --server SERVER    the server block (dns://:53) when several show the zone
  --json             reads print the API's JSON
  --timeout D        of each request (default 10s)

exit codes: 0 done, 1 refused by the server (or the Corefile does not parse), 2 usage,
3 the server cannot be reached, 4 coredns cannot be run for check
`

// globals are the flags every command takes.
type globals struct {
	addr, tokenFile, caCert, server string
	json                            bool
	timeout                         time.Duration
}

func (g *globals) register(fs *flag.FlagSet) {
	fs.StringVar(&g.addr, "addr", envOr("HEALTHDNS_ADDR", "127.0.0.1:8053"), "")
	fs.StringVar(&g.tokenFile, "token-file", os.Getenv("HEALTHDNS_TOKEN_FILE"), "")
	fs.StringVar(&g.caCert, "cacert", os.Getenv("HEALTHDNS_CACERT"), "")
	fs.StringVar(&g.server, "server", "", "")
	fs.BoolVar(&g.json, "json", false, "")
	fs.DurationVar(&g.timeout, "timeout", 10*time.Second, "")
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// usageError is a command line that does not read.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error { return usageError{fmt.Sprintf(format, args...)} }

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	err := dispatch(ctx, args, stdout, stderr)
	if err == nil {
		return exitOK
	}
	var ue usageError
	var ce *client.Error
	var ne noCoreDNS
	switch {
	case errors.As(err, &ue):
		fmt.Fprintf(stderr, "healthdnsctl: %v\n\n%s", err, usage)
		return exitUsage
	case errors.As(err, &ce):
		fmt.Fprintf(stderr, "healthdnsctl: %v\n", err)
		return exitRefused
	case errors.As(err, &ne):
		fmt.Fprintf(stderr, "healthdnsctl: %v\n", err)
		return exitNoCoreDNS
	case errors.Is(err, errCheckFailed):
		return exitRefused
	}
	fmt.Fprintf(stderr, "healthdnsctl: %v\n", err)
	return exitUnreachable
}

// parse reads a command's flags wherever they are among its arguments, and returns the
// arguments; nargs is how many it wants (-1: any number up to max).
func parse(fs *flag.FlagSet, args []string, min, max int) ([]string, error) {
	fs.SetOutput(io.Discard)
	var positional []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, usagef("%s: %v", fs.Name(), err)
		}
		args = fs.Args()
		if len(args) == 0 {
			break
		}
		positional = append(positional, args[0])
		args = args[1:]
	}
	if len(positional) < min || len(positional) > max {
		return nil, usagef("%s: %d arguments, want %s", fs.Name(), len(positional), argCount(min, max))
	}
	return positional, nil
}

func argCount(min, max int) string {
	if min == max {
		return fmt.Sprint(min)
	}
	return fmt.Sprintf("%d to %d", min, max)
}

func dispatch(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var g globals
	top := flag.NewFlagSet("healthdnsctl", flag.ContinueOnError)
	g.register(top)
	top.SetOutput(io.Discard)
	if err := top.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(stdout, usage)
			return nil
		}
		return usagef("%v", err)
	}
	args = top.Args()
	if len(args) == 0 {
		return usagef("no command")
	}
	cmd, args := args[0], args[1:]
	if cmd == "backend" {
		if len(args) == 0 {
			return usagef("backend: want get, set or rm")
		}
		cmd, args = "backend "+args[0], args[1:]
	}
	// The command's flags start from what the flags before the command set.
	before := map[string]string{}
	top.Visit(func(f *flag.Flag) { before[f.Name] = f.Value.String() })
	fs := flag.NewFlagSet(cmd, flag.ContinueOnError)
	g.register(fs)
	for name, value := range before {
		fs.Set(name, value)
	}
	o := &op{g: &g, stdout: stdout, stderr: stderr}
	switch cmd {
	case "status":
		a, err := parse(fs, args, 0, 1)
		if err != nil {
			return err
		}
		return o.status(ctx, a)
	case "drain":
		until := fs.String("until", "", "")
		reason := fs.String("reason", "", "")
		a, err := parse(fs, args, 2, 2)
		if err != nil {
			return err
		}
		d := client.DrainRequest{Zone: a[0], Backend: a[1], Reason: *reason}
		if d.Until, err = parseUntil(*until); err != nil {
			return err
		}
		return o.write(ctx, func(c *client.Client) (any, error) { return c.Drain(ctx, d) })
	case "undrain":
		a, err := parse(fs, args, 2, 2)
		if err != nil {
			return err
		}
		return o.write(ctx, func(c *client.Client) (any, error) { return c.Undrain(ctx, a[0], a[1]) })
	case "failback":
		a, err := parse(fs, args, 1, 1)
		if err != nil {
			return err
		}
		return o.write(ctx, func(c *client.Client) (any, error) { return c.FailBack(ctx, a[0]) })
	case "backend get":
		a, err := parse(fs, args, 2, 2)
		if err != nil {
			return err
		}
		return o.backendGet(ctx, a[0], a[1])
	case "backend set":
		weight := fs.Uint("weight", 0, "")
		priority := fs.Uint("priority", 0, "")
		drain := fs.Bool("drain", false, "")
		reason := fs.String("reason", "", "")
		until := fs.String("until", "", "")
		a, err := parse(fs, args, 2, 2)
		if err != nil {
			return err
		}
		set := map[string]bool{}
		fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
		if *priority > 255 {
			return usagef("--priority %d: want 1 to 255", *priority)
		}
		untilT, err := parseUntil(*until)
		if err != nil {
			return err
		}
		return o.backendSet(ctx, a[0], a[1], func(r *client.BackendRequest) {
			if set["weight"] {
				r.Weight = uint32(*weight)
			}
			if set["priority"] {
				r.Priority = uint8(*priority)
			}
			if set["drain"] {
				r.Drain = *drain
				if !*drain {
					r.Reason, r.Until = "", ""
				}
			}
			if set["reason"] {
				r.Drain, r.Reason = true, *reason
			}
			if set["until"] {
				r.Drain, r.Until = true, untilT.UTC().Format(time.RFC3339)
			}
		})
	case "backend rm":
		a, err := parse(fs, args, 2, 2)
		if err != nil {
			return err
		}
		return o.backendRemove(ctx, a[0], a[1])
	case "watch":
		if _, err := parse(fs, args, 0, 0); err != nil {
			return err
		}
		return o.watch(ctx)
	case "report":
		output := fs.String("output", "", "")
		a, err := parse(fs, args, 3, 3)
		if err != nil {
			return err
		}
		if a[2] != "pass" && a[2] != "fail" {
			return usagef("report: result %q, want pass or fail", a[2])
		}
		return o.write(ctx, func(c *client.Client) (any, error) { return c.Report(ctx, a[0], a[1], a[2] == "pass", *output) })
	case "check":
		corefile := fs.String("coredns", os.Getenv("HEALTHDNS_COREDNS"), "")
		a, err := parse(fs, args, 1, 1)
		if err != nil {
			return err
		}
		return check(ctx, *corefile, a[0], stdout, stderr)
	}
	return usagef("unknown command %q", cmd)
}

// parseUntil reads a drain's end: an RFC 3339 time, or a duration from now.
func parseUntil(s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if d, err := time.ParseDuration(s); err == nil {
		return time.Now().Add(d), nil
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return time.Time{}, usagef("--until %q: want an RFC 3339 time (2026-12-24T18:00:00Z) or a duration (2h)", s)
	}
	return t, nil
}

// op is one command's run: its flags and where it prints.
type op struct {
	g              *globals
	stdout, stderr io.Writer
}

func (o *op) client() (*client.Client, error) {
	opts := []client.Option{client.WithServer(o.g.server)}
	if o.g.tokenFile != "" {
		token, err := os.ReadFile(o.g.tokenFile)
		if err != nil {
			return nil, usagef("token file: %v", err)
		}
		first, _, _ := strings.Cut(string(token), "\n")
		opts = append(opts, client.WithToken(first))
	}
	hc := &http.Client{Timeout: o.g.timeout}
	if o.g.caCert != "" {
		pem, err := os.ReadFile(o.g.caCert)
		if err != nil {
			return nil, usagef("--cacert: %v", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, usagef("--cacert %s: no PEM certificate in it", o.g.caCert)
		}
		hc.Transport = &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}
	}
	c, err := client.New(o.g.addr, append(opts, client.WithHTTPClient(hc))...)
	if err != nil {
		return nil, usagef("--addr: %v", err)
	}
	return c, nil
}

func (o *op) printJSON(v any) error {
	enc := json.NewEncoder(o.stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// write runs a write and prints its answer: JSON, as every write's answer is short.
func (o *op) write(ctx context.Context, do func(*client.Client) (any, error)) error {
	c, err := o.client()
	if err != nil {
		return err
	}
	a, err := do(c)
	if err != nil {
		return err
	}
	return o.printJSON(a)
}

func (o *op) status(ctx context.Context, args []string) error {
	c, err := o.client()
	if err != nil {
		return err
	}
	var pools []client.Pool
	if len(args) == 1 {
		p, err := c.Pool(ctx, args[0])
		if err != nil {
			return err
		}
		if o.g.json {
			return o.printJSON(p)
		}
		pools = []client.Pool{*p}
	} else {
		if o.g.json {
			d, err := c.Status(ctx)
			if err != nil {
				return err
			}
			return o.printJSON(d)
		}
		if pools, err = c.Pools(ctx); err != nil {
			return err
		}
	}
	tw := tabwriter.NewWriter(o.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ZONE\tBACKEND\tPRIORITY\tWEIGHT\tSTATE\tSINCE\tWHY")
	now := time.Now()
	for _, p := range pools {
		for _, b := range p.Backends {
			since := "-"
			if b.Since != nil {
				since = now.Sub(*b.Since).Truncate(time.Second).String() + " ago"
			}
			why := b.Error
			if b.State == "drained" {
				why = strings.TrimSpace("drained by " + b.DrainedBy + " " + b.DrainReason)
			}
			fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%s\t%s\t%s\n", p.Zone, b.Address, b.Priority, b.Weight, b.State, since, why)
		}
	}
	return tw.Flush()
}

func (o *op) backendGet(ctx context.Context, zone, addr string) error {
	c, err := o.client()
	if err != nil {
		return err
	}
	b, err := c.Backend(ctx, zone, addr)
	if err != nil {
		return err
	}
	if o.g.json {
		return o.printJSON(b)
	}
	if b.Key != "" {
		fmt.Fprintf(o.stdout, "%s %s: etcd %s = '%s' (revision %d)\n", b.Zone, b.Backend, b.Key, *b.Value, b.Revision)
	}
	if b.Status != nil {
		fmt.Fprintf(o.stdout, "%s %s: %s, priority %d, weight %d\n", b.Zone, b.Backend, b.Status.State, b.Status.Priority, b.Status.Weight)
	}
	return nil
}

// backendSet reads the backend's key, changes what the flags say, and writes it back on the
// revision read: a change made meanwhile by another console is refused, not overwritten.
func (o *op) backendSet(ctx context.Context, zone, addr string, change func(*client.BackendRequest)) error {
	c, err := o.client()
	if err != nil {
		return err
	}
	var req client.BackendRequest
	var revision int64
	cur, err := c.Backend(ctx, zone, addr)
	switch {
	case err == nil && cur.Key != "":
		revision = cur.Revision
		req = client.BackendRequest{Weight: cur.Weight, Priority: cur.Priority, Drain: cur.Drain, Reason: cur.Reason}
		if cur.Until != nil {
			req.Until = cur.Until.UTC().Format(time.RFC3339)
		}
	case err == nil:
		// Listed, but not by etcd: the write says where.
	case !client.IsCode(err, "backend_not_found"):
		return err
	}
	change(&req)
	a, err := c.SetBackend(ctx, zone, addr, req, revision)
	if err != nil {
		return err
	}
	return o.printJSON(a)
}

func (o *op) backendRemove(ctx context.Context, zone, addr string) error {
	c, err := o.client()
	if err != nil {
		return err
	}
	cur, err := c.Backend(ctx, zone, addr)
	if err != nil {
		return err
	}
	a, err := c.RemoveBackend(ctx, zone, addr, cur.Revision)
	if err != nil {
		return err
	}
	return o.printJSON(a)
}

// watch prints each event as it comes, reconnecting from the last one when the server ends the
// stream (a reload), until interrupted.
func (o *op) watch(ctx context.Context) error {
	// The stream lasts: the request timeout is the other commands'.
	o.g.timeout = 0
	c, err := o.client()
	if err != nil {
		return err
	}
	var last uint64
	for {
		last, err = c.Events(ctx, last, func(e client.Event) error {
			if o.g.json {
				b, err := json.Marshal(e)
				if err != nil {
					return err
				}
				_, err = fmt.Fprintf(o.stdout, "%s\n", b)
				return err
			}
			_, err := fmt.Fprintln(o.stdout, eventLine(e))
			return err
		})
		if ctx.Err() != nil {
			return nil
		}
		var ce *client.Error
		if errors.As(err, &ce) {
			return err
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(time.Second):
		}
	}
}

func eventLine(e client.Event) string {
	parts := []string{e.Time.Local().Format(time.RFC3339), e.Zone, string(e.Kind)}
	for _, f := range []struct{ k, v string }{{"backend", e.Backend}, {"family", e.Family}, {"check", e.Check}, {"reason", e.Reason}, {"error", e.Error}, {"why", e.Why}, {"by", e.By}, {"source", e.Source}} {
		if f.v != "" {
			parts = append(parts, f.k+"="+f.v)
		}
	}
	if e.From != nil && e.To != nil {
		parts = append(parts, fmt.Sprintf("group %d->%d", *e.From, *e.To))
	}
	return strings.Join(parts, " ")
}

// errCheckFailed is a Corefile that does not parse: coredns said why.
var errCheckFailed = errors.New("the Corefile does not parse")

type noCoreDNS struct{ err error }

func (e noCoreDNS) Error() string { return e.err.Error() }

// check runs coredns -healthdns-check on file: the coredns that would start it, with the same
// plugins, parses it. coredns is found as --coredns (HEALTHDNS_COREDNS) says, else beside this
// command, else on PATH.
func check(ctx context.Context, coredns, file string, stdout, stderr io.Writer) error {
	if coredns == "" {
		coredns = "coredns"
		// The Debian package installs coredns-healthdns beside /usr/bin/healthdnsctl; a release
		// archive unpacked in one directory, coredns.
		if self, err := os.Executable(); err == nil {
			for _, name := range []string{"coredns-healthdns", "coredns"} {
				if beside := filepath.Join(filepath.Dir(self), name); isFile(beside) {
					coredns = beside
					break
				}
			}
		}
	}
	cmd := exec.CommandContext(ctx, coredns, "-conf", file, "-healthdns-check")
	cmd.Stdout, cmd.Stderr = stdout, stderr
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &ee):
		return errCheckFailed
	}
	return noCoreDNS{fmt.Errorf("check: running %s: %v (give it with --coredns or HEALTHDNS_COREDNS)", coredns, err)}
}

func isFile(path string) bool {
	st, err := os.Stat(path)
	return err == nil && st.Mode().IsRegular()
}
