#!/usr/bin/env bash
# Failover benchmark: healthdns beside Keepalived, gdnsd and PowerDNS in one namespace lab.
# Needs root. Installs the peers from Debian when missing, then runs the driver; arguments go
# to it (-trials N, -loss DURATION, -systems a,b). Results: bench/RESULTS.md.
set -euo pipefail
cd "$(dirname "$0")/../.."
export PATH="$PATH:/usr/local/go/bin:/usr/sbin:/sbin"

missing=()
command -v ip >/dev/null || missing+=(iproute2)
command -v keepalived >/dev/null || missing+=(keepalived)
command -v gdnsd >/dev/null || missing+=(gdnsd)
command -v pdns_server >/dev/null || missing+=(pdns-server pdns-backend-bind)
if [ "${#missing[@]}" -gt 0 ]; then
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi
exec go run ./bench/failover "$@"
