#!/usr/bin/env bash
# Runs every fuzz target for a bounded time, one after another, and fails at the first that
# finds an input breaking its property (go test then writes it under the package's
# testdata/fuzz/TARGET/: commit it as a seed with the fix).
#
#   [PARALLEL=2] bench/fuzz/run.sh [SECONDS=10] [TARGET-REGEXP]
#
# `go test ./...` already runs each target's seeds (f.Add and testdata/fuzz) as plain tests;
# this adds the mutation. CI runs it with the default few seconds a target; docs/RELIABILITY.md
# ("Fuzzing") gives a longer run's figures. FuzzHTTPCheck sends its answers over 127.0.0.1;
# no other target touches the network.
set -euo pipefail
seconds=${1:-10}
only=${2:-.}
parallel=${PARALLEL:-2}
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
	echo "== $name ($pkg, ${seconds}s)"
	# -run matches no test, so only the target's mutation runs; the last line of the fuzzer's
	# progress has its exec count.
	go test -run '^$' -fuzz "^${name}\$" -fuzztime "${seconds}s" -parallel "$parallel" "$pkg"
done
