// Package deploy holds what runs healthdns in production: the systemd unit, the container
// image (image/), the k3s manifests, the Prometheus alerting rules and the Grafana dashboard,
// and the release script. Its tests
// check each of them against the tools that read them and against the real binary.
package deploy
