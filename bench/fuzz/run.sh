#!/usr/bin/env bash
# Runs every fuzz target for a bounded budget, one after another, and fails at the first that
# finds an input breaking its property (go test then writes it under the package's
# testdata/fuzz/TARGET/: commit it as a seed with the fix).
#
#   [PARALLEL=2] [MINIMIZE=2000x] bench/fuzz/run.sh [BUDGET=10s] [TARGET-REGEXP]
#
# BUDGET is go test's -fuzztime: a duration (60s, a bare number counts as seconds) or a count of
# executions (3000x). CI gives a count: Go 1.26's fuzz coordinator can fail a target with a bare
# "context deadline exceeded" when a duration runs out while a worker is mid-input (golang/go#75804,
# fixed in Go 1.27), and a count never sets that deadline. A long run by hand can use a duration and
# should read that message, with no input written under testdata/fuzz/, as the toolchain's and not
# a finding. MINIMIZE bounds the shrinking of each new input (go's default is 60s an input, which
# held FuzzPolicies at 0 execs/s for 36 s of a 45 s run here); raise it to shrink a crasher further.
#
# `go test ./...` already runs each target's seeds (f.Add and testdata/fuzz) as plain tests;
# this adds the mutation. CI runs it with the default few seconds a target; docs/RELIABILITY.md
# ("Fuzzing") gives a longer run's figures. FuzzHTTPCheck sends its answers over 127.0.0.1;
# no other target touches the network.
set -euo pipefail
budget=${1:-10s}
[[ $budget =~ ^[0-9]+$ ]] && budget=${budget}s
only=${2:-.}
parallel=${PARALLEL:-2}
minimize=${MINIMIZE:-2000x}
cd "$(dirname "$0")/../.."

targets=(
	"FuzzParseCorefile ."
	"FuzzServeDNS ."
	"FuzzBackendsFile ./pool"
	"FuzzEtcdBackends ./pool"
	"FuzzPolicies ./balance"
	"FuzzFailover ./balance"
	"FuzzWriteBodies ./status"
	"FuzzEchoReply ./health/internal/wire"
	"FuzzSYNReply ./health/internal/wire"
	"FuzzHTTPCheck ./health/internal/wire"
)
for t in "${targets[@]}"; do
	read -r name pkg <<<"$t"
	[[ $name =~ $only ]] || continue
	echo "== $name ($pkg, $budget)"
	# -run matches no test, so only the target's mutation runs; the last line of the fuzzer's
	# progress has its exec count.
	go test -run '^$' -fuzz "^${name}\$" -fuzztime "$budget" -fuzzminimizetime "$minimize" -parallel "$parallel" "$pkg"
done
