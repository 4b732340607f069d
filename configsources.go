package healthdns

import (
	"net/url"
	"path/filepath"
	"strings"

	"github.com/coredns/caddy"
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/healthdns/healthdns/pool"
)

func otherSource(prop string) string {
	if prop == "backends_file" {
		return "backends_etcd"
	}
	return "backends_file"
}

// parseBackendsFile reads 'backends_file PATH'; a relative path is the Corefile root's, as the
// hosts plugin's is.
func parseBackendsFile(c *caddy.Controller, args []string) (pool.Source, error) {
	if len(args) != 1 {
		return pool.Source{}, c.Errf("want 'backends_file PATH'")
	}
	path := args[0]
	if root := dnsserver.GetConfig(c).Root; !filepath.IsAbs(path) && root != "" {
		path = filepath.Join(root, path)
	}
	return pool.Source{Kind: pool.SourceFile, Line: c.Line(), Path: path}, nil
}

const etcdForm = "'backends_etcd { endpoint URL...; prefix PATH; credentials USER PASSWORD; tls CERT KEY CACERT }'"

// parseBackendsEtcd reads 'backends_etcd [{ ... }]'. The block is read token by token: caddy's
// NextBlock does not nest, and this one sits inside the healthdns block.
func parseBackendsEtcd(c *caddy.Controller, args []string) (pool.Source, error) {
	sc := pool.Source{Kind: pool.SourceEtcd, Line: c.Line()}
	// RemainingArgs stops before a '{' on the line and leaves it next.
	switch {
	case len(args) > 0:
		return sc, c.Errf("want %s", etcdForm)
	case c.NextArg():
		if c.Val() != "{" {
			return sc, c.Errf("want %s", etcdForm)
		}
		seen := map[string]int{}
		for {
			if !c.Next() {
				return sc, c.Errf("backends_etcd block opened on line %d is not closed; want %s", sc.Line, etcdForm)
			}
			prop := c.Val()
			if prop == "}" {
				break
			}
			if prev, dup := seen[prop]; dup {
				return sc, c.Errf("duplicate '%s' in backends_etcd (first on line %d): give it once", prop, prev)
			}
			seen[prop] = c.Line()
			if err := parseEtcdProperty(c, &sc.Etcd, prop, c.RemainingArgs()); err != nil {
				return sc, err
			}
		}
	}
	if len(sc.Etcd.Endpoints) == 0 {
		sc.Etcd.Endpoints = []string{"http://127.0.0.1:2379"}
	}
	return sc, nil
}

func parseEtcdProperty(c *caddy.Controller, ec *pool.EtcdSource, prop string, args []string) error {
	switch prop {
	case "endpoint":
		if len(args) == 0 {
			return c.Errf("'endpoint' wants at least one URL, such as http://127.0.0.1:2379")
		}
		for _, a := range args {
			u, err := url.Parse(a)
			if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || (u.Path != "" && u.Path != "/") {
				return c.Errf("invalid etcd endpoint '%s': want an http:// or https:// URL of host and port, such as http://10.0.0.5:2379", a)
			}
		}
		ec.Endpoints = args
	case "prefix":
		if len(args) != 1 || !strings.HasPrefix(args[0], "/") {
			return c.Errf("want 'prefix PATH', a key prefix that starts with /, such as /healthdns/app.lan/")
		}
		ec.Prefix = args[0]
		if !strings.HasSuffix(ec.Prefix, "/") {
			ec.Prefix += "/"
		}
	case "credentials":
		if len(args) != 2 {
			return c.Errf("want 'credentials USER PASSWORD'")
		}
		ec.User, ec.Password = args[0], args[1]
	case "tls":
		if len(args) != 3 {
			return c.Errf("want 'tls CERT KEY CACERT'")
		}
		ec.TLSCert, ec.TLSKey, ec.TLSCA = args[0], args[1], args[2]
		if _, err := ec.TLSConfig(); err != nil {
			return c.Errf("backends_etcd tls: %v", err)
		}
	default:
		return c.Errf("unknown backends_etcd property '%s'; want endpoint, prefix, credentials or tls", prop)
	}
	return nil
}
