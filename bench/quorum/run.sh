#!/usr/bin/env bash
# The long randomized schedule of the fleet's quorum: test/quorumchaos_test.go's
# TestFleetQuorumChaos (the CI version runs 8 steps) with STEPS steps over three real servers
# under nopreempt: cuts between a server and the primary, a server cut off from etcd (a proxy
# of its own), a server killed (SIGKILL) and restarted, the primary down for everyone, and the
# operator's fail-back. After each step every server that reaches etcd must answer as the
# agreed key says within a generous bound; at the end a checker replays etcd's watch of the
# key and the views: no move without a quorum's views, no move up but the fail-back, each
# logged with its cause. About 4 s a step: 150 steps are ten minutes. SEED replays a schedule
# (the test logs the one it used).
#
#   bench/quorum/run.sh [STEPS=150]
#
# Needs /usr/bin/etcd. Sends traffic only to 127.0.0.1 and 127.0.19.1, 127.0.19.2.
set -euo pipefail
steps=${1:-150}
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg); $(nproc) CPUs" >&2
set +e
HEALTHDNS_QUORUM_STEPS=$steps HEALTHDNS_QUORUM_SEED=${SEED:-} \
	go test -count=1 -run '^TestFleetQuorumChaos$' -v -timeout "$((steps * 15 + 300))s" ./test/ 2>&1 |
	grep -v '^\s*{"level"' # etcd's own warnings
status=${PIPESTATUS[0]}
set -e
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
exit "$status"
