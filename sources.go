package healthdns

import (
	"fmt"
	"strings"
)

// sourceKind says where a pool's live backend list comes from, besides its Corefile lines.
type sourceKind int

const (
	sourceNone sourceKind = iota
	sourceFile
	sourceEtcd
)

// sourceConfig is a pool's backends_file or backends_etcd.
type sourceConfig struct {
	kind sourceKind
	line int    // its Corefile line
	path string // backends_file
	etcd etcdConfig
}

type etcdConfig struct {
	endpoints              []string
	prefix                 string
	user, password         string
	tlsCert, tlsKey, tlsCA string
}

// String names the source in logs, metrics and the status page: "file /etc/healthdns/app.lan"
// or "etcd /healthdns/app.lan/".
func (s sourceConfig) String() string {
	switch s.kind {
	case sourceFile:
		return "file " + s.path
	case sourceEtcd:
		return fmt.Sprintf("etcd %s %s", s.etcd.prefix, strings.Join(s.etcd.endpoints, ","))
	}
	return ""
}
