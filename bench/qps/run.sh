#!/usr/bin/env bash
# Query-path throughput and latency of healthdns against the same binary's hosts and file
# plugins, alternating in one run. The server is pinned to CPU 1 and dnsperf to CPU 0.
#
#   [SYSTEMS="healthdns hosts ..."] bench/qps/run.sh [ROUNDS=3] [SECONDS=10] [RATE=10000]
#
# For each round and each system: the maximum QPS (dnsperf -c 8 -q 200, as in
# ../shared/research/anchors-measured.md), then p50/p99 latency at a fixed RATE (dnsperf -Q,
# per-query latencies from -v), with the CPU steal of that window. Prints a Markdown table of the
# medians over the rounds. Then, ROUNDS times, healthdns's, hosts' and file's names in turn in
# one dnsperf run at RATE, so that their latencies are compared within the same window.
# Where installed, gdnsd (multifo + tcp_connect) and PowerDNS (LUA ifportup, lua records
# "shared") serve the same health-checked name against the same backends, on the same CPU.
# Needs dnsperf (apt-get install dnsperf) and taskset (util-linux); optionally gdnsd, pdns-server
# and pdns-backend-bind. Sends traffic only to 127.0.0.1.
set -euo pipefail
rounds=${1:-3}
seconds=${2:-10}
rate=${3:-10000}

root=$(cd "$(dirname "$0")/../.." && pwd)
work=$(mktemp -d)
pids=()
cleanup() {
	for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null; done
	sleep 1 # then make sure: a server left running would skew the next benchmark
	for pid in "${pids[@]}"; do kill -9 "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; done
	rm -rf "$work"
}
trap cleanup EXIT

command -v dnsperf >/dev/null || { echo "dnsperf is not installed: apt-get install dnsperf" >&2; exit 1; }
(cd "$root" && go build -o "$work/coredns" ./build)

port=$((20000 + RANDOM % 20000))
backend_port=$((port + 1))
cat > "$work/db.file.lan" <<ZONE
\$ORIGIN file.lan.
@   3600 IN SOA ns.file.lan. hostmaster.file.lan. 1 7200 3600 1209600 5
@   3600 IN NS  ns.file.lan.
ns  3600 IN A   127.0.0.1
www 5    IN A   127.0.0.11
ZONE
# Three healthy backends for healthdns: the ready, health and prometheus listeners of this very
# server on one port of 127.0.0.1-3 (they listen before healthdns's first probes). They sit in a
# server block of their own so that the measured chain has no per-query metrics or logging.
cat > "$work/Corefile" <<COREFILE
.:$((port + 2)) {
    bind 127.0.0.1
    ready 127.0.0.1:$backend_port
    health 127.0.0.2:$backend_port
    prometheus 127.0.0.3:$backend_port
}
.:$port {
    bind 127.0.0.1
    healthdns app.lan {
        backend 127.0.0.1
        backend 127.0.0.2
        backend 127.0.0.3
        check tcp $backend_port
        answers 1
    }
    hosts {
        127.0.0.11 static.lan
        fallthrough
    }
    file $work/db.file.lan file.lan
}
COREFILE
echo "www.app.lan A" > "$work/q.healthdns"
echo "static.lan A" > "$work/q.hosts"
echo "www.file.lan A" > "$work/q.file"
declare -A ports=([healthdns]=$port [hosts]=$port [file]=$port)
systems="healthdns hosts file"

taskset -c 1 "$work/coredns" -conf "$work/Corefile" > "$work/coredns.log" 2>&1 &
pids+=($!)

# The peers, checking the same three backends on the same port, as fast as each allows.
if command -v gdnsd >/dev/null; then
	mkdir -p "$work/gdnsd/zones"
	cat > "$work/gdnsd/config" <<GDNSD
options => {
  listen => [ 127.0.0.1:$((port + 3)) ]
  run_dir => $work/gdnsd/run
  state_dir => $work/gdnsd/state
}
service_types => {
  tcp => { plugin => tcp_connect, port => $backend_port, interval => 2, timeout => 1, up_thresh => 2, down_thresh => 2, ok_thresh => 2 }
}
plugins => { multifo => { app => { service_types => tcp, b1 => 127.0.0.1, b2 => 127.0.0.2, b3 => 127.0.0.3 } } }
GDNSD
	cat > "$work/gdnsd/zones/app.lan" <<ZONE
@   3600 SOA ns hostmaster 1 7200 1800 1209600 5
@   3600 NS  ns
ns  3600 A   127.0.0.1
www 5    DYNA multifo!app
ZONE
	taskset -c 1 gdnsd -c "$work/gdnsd" start > "$work/gdnsd.log" 2>&1 &
	pids+=($!)
	ports[gdnsd]=$((port + 3))
	cp "$work/q.healthdns" "$work/q.gdnsd"
	systems="$systems gdnsd"
fi
if command -v pdns_server >/dev/null && [ -e /usr/lib/x86_64-linux-gnu/pdns/libbindbackend.so ]; then
	mkdir -p "$work/pdns"
	cat > "$work/pdns/pdns.conf" <<PDNS
launch=bind
bind-config=$work/pdns/named.conf
local-address=127.0.0.1
local-port=$((port + 4))
enable-lua-records=shared
socket-dir=$work/pdns
guardian=no
daemon=no
loglevel=3
PDNS
	echo "zone \"app.lan\" { type master; file \"$work/pdns/app.lan.zone\"; };" > "$work/pdns/named.conf"
	cat > "$work/pdns/app.lan.zone" <<ZONE
\$ORIGIN app.lan.
@   3600 IN SOA ns hostmaster 1 7200 1800 1209600 5
@   3600 IN NS  ns
ns  3600 IN A   127.0.0.1
www 5 IN LUA A "ifportup($backend_port, {'127.0.0.1', '127.0.0.2', '127.0.0.3'})"
ZONE
	taskset -c 1 pdns_server --config-dir="$work/pdns" > "$work/pdns.log" 2>&1 &
	pids+=($!)
	ports[pdns]=$((port + 4))
	cp "$work/q.healthdns" "$work/q.pdns"
	systems="$systems pdns"
fi

# SYSTEMS="healthdns hosts" measures those alone: more short rounds in the same time, for more
# windows without steal.
for sys in ${SYSTEMS:-}; do
	[[ " $systems " == *" $sys "* ]] || { echo "SYSTEMS: $sys is not one of: $systems" >&2; exit 1; }
done
systems=${SYSTEMS:-$systems}
for sys in $systems; do
	for _ in $(seq 100); do
		dnsperf -s 127.0.0.1 -p "${ports[$sys]}" -d "$work/q.$sys" -n 1 -t 1 2>/dev/null | grep -q "Queries completed:.*1 (100" && break
		sleep 0.1
	done
done
sleep 3 # let every system finish its first checks

# A hypervisor that takes the CPUs away for a moment (steal in /proc/stat) puts milliseconds
# into a p99 that has nothing to do with the server, so every latency window records its steal.
steal_ticks() { awk '/^cpu / {print $9, $2+$3+$4+$5+$6+$7+$8+$9}' /proc/stat; }
steal_percent() {
	echo "$1 $2" | awk '{d = $4 - $2; printf "%.1f", (d > 0 ? 100 * ($3 - $1) / d : 0)}'
}
for r in $(seq "$rounds"); do
	for sys in $systems; do
		qps=$(taskset -c 0 dnsperf -s 127.0.0.1 -p "${ports[$sys]}" -d "$work/q.$sys" -l "$seconds" -c 8 -q 200 2>&1 |
			awk '/Queries per second:/ {print $4}')
		# Written to a file and read afterwards, so no parser competes with the server's CPU.
		before=$(steal_ticks)
		taskset -c 0 dnsperf -s 127.0.0.1 -p "${ports[$sys]}" -d "$work/q.$sys" -l "$seconds" -Q "$rate" -v > "$work/lat" 2>&1
		steal=$(steal_percent "$before" "$(steal_ticks)")
		lat=$(awk '/^> NOERROR/ {print $NF}' "$work/lat" | sort -g |
			awk '{v[NR]=$1} END {printf "%.0f %.0f", v[int(NR*0.5)]*1e6, v[int(NR*0.99)]*1e6}')
		[ "$lat" != "0 0" ] || { echo "$sys gave no NOERROR answer; its log:" >&2; cat "$work/$sys.log" "$work/coredns.log" >&2 2>/dev/null; exit 1; }
		echo "$r $sys $qps $lat $steal" >> "$work/results"
		echo "round $r $sys: $qps qps; p50/p99 at $rate qps: ${lat// /\/} us (steal $steal%)" >&2
	done
done

median() { sort -g | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'; }
max_steal=1
hosts_qps=$(awk '$2=="hosts" {print $3}' "$work/results" | median)
hosts_p99=$(awk '$2=="hosts" {print $5}' "$work/results" | median)
echo
echo "| system | median QPS | ratio to hosts | p50 µs at $rate qps | p99 µs at $rate qps | p99 ratio to hosts | latency windows with steal < $max_steal% |"
echo "|---|---|---|---|---|---|---|"
for sys in $systems; do
	qps=$(awk -v s="$sys" '$2==s {print $3}' "$work/results" | median)
	p50=$(awk -v s="$sys" '$2==s {print $4}' "$work/results" | median)
	p99=$(awk -v s="$sys" '$2==s {print $5}' "$work/results" | median)
	clean=$(awk -v s="$sys" -v m="$max_steal" '$2==s && $6 < m' "$work/results" | grep -c . || true)
	awk -v s="$sys" -v q="$qps" -v h="$hosts_qps" -v p50="$p50" -v p99="$p99" -v hp="$hosts_p99" -v c="$clean of $rounds" \
		'BEGIN {printf "| %s | %.0f | %.3f | %d | %d | %.2f | %s |\n", s, q, q/h, p50, p99, p99/hp, c}'
done

# Latency in the same window. The systems' own windows above are seconds apart, and steal in one
# and not the other decides their p99 ratio. healthdns, hosts and file share one server, so one
# dnsperf run can send their names in turn (RATE in all) and every name meets the same host.
if [[ " $systems " == *" healthdns "* && " $systems " == *" hosts "* ]]; then
	cat "$work/q.healthdns" "$work/q.hosts" "$work/q.file" > "$work/q.mixed"
	echo
	echo "Same window: the three names in turn at $rate qps in all, $seconds s per round, p50/p99 in µs."
	echo
	echo "| round | steal | healthdns | hosts | file | p99 healthdns / hosts |"
	echo "|---|---|---|---|---|---|"
	for r in $(seq "$rounds"); do
		before=$(steal_ticks)
		taskset -c 0 dnsperf -s 127.0.0.1 -p "$port" -d "$work/q.mixed" -l "$seconds" -Q "$rate" -v > "$work/lat" 2>&1
		steal=$(steal_percent "$before" "$(steal_ticks)")
		for sys in healthdns hosts file; do
			name=$(awk '{print $1}' "$work/q.$sys")
			awk -v n="$name" '/^> NOERROR/ && $3 == n {print $NF}' "$work/lat" | sort -g |
				awk '{v[NR]=$1} END {printf "%.0f %.0f\n", v[int(NR*0.5)]*1e6, v[int(NR*0.99)]*1e6}' > "$work/lat.$sys"
		done
		read -r h50 h99 < "$work/lat.healthdns"
		read -r o50 o99 < "$work/lat.hosts"
		read -r f50 f99 < "$work/lat.file"
		echo "$r $steal $h50 $h99 $o50 $o99 $f50 $f99" >> "$work/same"
		awk -v r="$r" -v st="$steal" -v a="$h50/$h99" -v b="$o50/$o99" -v c="$f50/$f99" -v x="$h99" -v y="$o99" \
			'BEGIN {printf "| %d | %s%% | %s | %s | %s | %.2f |\n", r, st, a, b, c, x/y}'
	done
	awk '{print $4/$6}' "$work/same" | median | awk '{printf "| median | | | | | **%.2f** |\n", $1}'
fi
echo
echo "$rounds rounds of ${seconds}s each; $(nproc) CPUs; $("$work/coredns" -version | head -1)"
command -v gdnsd >/dev/null && echo "gdnsd $(gdnsd -h 2>&1 | awk '/version/ {print $3; exit}'): multifo answers every healthy backend (3 records), the others one."
command -v pdns_server >/dev/null && echo "PowerDNS $(pdns_server --version 2>&1 | awk '/Authoritative Server/ {print $7; exit}') with enable-lua-records=shared."
