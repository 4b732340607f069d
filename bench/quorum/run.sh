#!/usr/bin/env bash
# The long randomized schedule of the fleet's quorum: test/quorum_test.go's
# TestFleetQuorumRandomCuts (the CI version runs 12 steps) with STEPS steps of random cuts
# between three real servers and the primary, each checked against what the quorum allows
# (a move exactly when two servers or more are cut, in one write, logged; none otherwise;
# nopreempt after it). About 4 s a step: 150 steps are ten minutes. SEED replays a schedule
# (the test logs the one it used).
#
#   bench/quorum/run.sh [STEPS=150]
#
# Needs /usr/bin/etcd. Sends traffic only to 127.0.0.1 and 127.0.17.21, 127.0.17.22.
set -euo pipefail
steps=${1:-150}
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg); $(nproc) CPUs" >&2
set +e
HEALTHDNS_QUORUM_STEPS=$steps HEALTHDNS_QUORUM_SEED=${SEED:-} \
	go test -count=1 -run '^TestFleetQuorumRandomCuts$' -v -timeout "$((steps * 10 + 300))s" ./test/ 2>&1 |
	grep -v '^\s*{"level"' # etcd's own warnings
status=${PIPESTATUS[0]}
set -e
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
exit "$status"
