// Package source watches the places a pool's backend list comes from besides the Corefile: a file
// and etcd. It delivers raw contents; the plugin parses them.
package source
