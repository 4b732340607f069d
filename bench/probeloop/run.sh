#!/usr/bin/env bash
# BenchmarkProbeLoop before and after the reshape, alternated in one run so that the host's noise
# hits every side alike (bench/RESULTS.md, "Nothing moved").
#
#   bench/probeloop/run.sh OLD_TREE [ROUNDS]
#
# OLD_TREE is a checkout of a commit from before the reshape (git worktree add DIR 38de945),
# where the benchmark lived in health/ and each probe reported to its Monitor. Three binaries run
# in turn, ROUNDS times (default 10), each with -count 1:
#   old            OLD_TREE's health BenchmarkProbeLoop (loop and Monitor);
#   engine         this tree's health/internal/engine BenchmarkProbeLoop (the loop alone);
#   health+monitor monitor_loop_bench_test.go.in, the old benchmark ported to this tree's API,
#                  compiled into health/ through go's -overlay, so that nothing is written there.
# It prints each run and the median cpu-ns/probe of each side.
set -euo pipefail
old=$(cd "${1:?usage: $0 OLD_TREE [ROUNDS]}" && pwd)
rounds=${2:-10}
cd "$(dirname "$0")/../.."
new=$(pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
printf '{"Replace":{"%s":"%s"}}' "$new/health/zz_monitor_loop_bench_test.go" "$new/bench/probeloop/monitor_loop_bench_test.go.in" >"$tmp/overlay.json"
(cd "$old" && go test -c -o "$tmp/old" ./health)
go test -c -o "$tmp/engine" ./health/internal/engine
go test -overlay "$tmp/overlay.json" -c -o "$tmp/monitor" ./health
for i in $(seq "$rounds"); do
	(cd "$old/health" && "$tmp/old" -test.run XXX -test.bench 'ProbeLoop$' -test.count 1 | sed -n "s/^Benchmark/old $i &/p")
	(cd health/internal/engine && "$tmp/engine" -test.run XXX -test.bench 'ProbeLoop$' -test.count 1 | sed -n "s/^Benchmark/engine $i &/p")
	(cd health && "$tmp/monitor" -test.run XXX -test.bench ProbeLoopMonitor -test.count 1 | sed -n "s/^Benchmark/health+monitor $i &/p")
done | tee "$tmp/runs"
awk '{for (i = 1; i <= NF; i++) if ($i == "cpu-ns/probe") print $1, $(i-1)}' "$tmp/runs" | sort -k1,1 -k2,2n |
	awk '{v[$1, ++n[$1]] = $2} END {for (k in n) {m = n[k]; printf "median cpu-ns/probe %s: %.0f (%d runs)\n", k, (v[k, int((m+1)/2)] + v[k, int(m/2)+1]) / 2, m}}'
