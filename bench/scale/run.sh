#!/usr/bin/env bash
# Probe cost at 100, 1,000 and 10,000 backends (10 per zone), TCP then ICMP checks, interval 1s.
# coredns is not pinned: on loopback the kernel charges both ends of a TCP handshake to the
# dialing CPU, so the prober's figures are taken with both cores available to it; -cpu 1 with
# -qps measures the cost to queries instead (see bench/RESULTS.md).
#   bench/scale/run.sh [MEASURE=20s]
set -euo pipefail
cd "$(dirname "$0")/../.."
measure=${1:-20s}
bin=$(mktemp -d)/coredns
trap 'rm -rf "$(dirname "$bin")"' EXIT
go build -o "$bin" ./build
go build -o "$(dirname "$bin")/scale" ./bench/scale
echo "| check | backends | zones | interval | start to Ready | CPU (cores) | RSS MiB | p50 lateness | p99 lateness | up | reload |"
echo "|---|---|---|---|---|---|---|---|---|---|---|"
for check in tcp icmp; do
	for n in 100 1000 10000; do
		"$(dirname "$bin")/scale" -coredns "$bin" -cpu "" -check "$check" -backends "$n" -zones $((n / 10)) -measure "$measure"
	done
done
