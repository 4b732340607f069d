#!/usr/bin/env bash
# Chaos under load at full size: test/chaos_test.go's TestChaos (the CI version runs in the
# normal suite at 1,500 qps for 12 s) with 50 backends flapping, a backends file and an etcd
# prefix rewritten every second, drains through the API, and 20,000 queries a second for 60 s.
#
#   bench/chaos/run.sh [SECONDS=60] [QPS=20000] [BACKENDS=50]
#
# Without -race: the load generator is Go, in the test binary, and the race detector would
# cost it most of its rate. SLACK (default 1s) is added to the staleness and drain bounds, WAIT
# (default 2s) is how long a query waits before it is asked once more. Needs /usr/bin/etcd
# (Debian's etcd-server). Sends traffic only to 127.0.0.1 and 127.0.8.64-127.0.8.127.
set -euo pipefail
seconds=${1:-60}
qps=${2:-20000}
backends=${3:-50}
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg); $(nproc) CPUs" >&2
set +e
HEALTHDNS_CHAOS_DURATION=${seconds}s HEALTHDNS_CHAOS_QPS=$qps HEALTHDNS_CHAOS_BACKENDS=$backends \
	HEALTHDNS_CHAOS_SLACK=${SLACK:-1s} HEALTHDNS_CHAOS_WAIT=${WAIT:-2s} \
	go test -count=1 -run '^TestChaos$' -v -timeout "$((seconds + 600))s" ./test/ 2>&1 |
	grep -v '^\s*{"level"' # etcd's own warnings
status=${PIPESTATUS[0]}
set -e
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
exit "$status"
