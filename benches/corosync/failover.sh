#!/usr/bin/env bash
# failover.sh - Corosync's failure-detection time: 3 corosync nodes in network namespaces
# (the setup of ../../../shared/bench/corosync/cluster3.sh: netns NS_PREFIX1..3 on a bridge in
# NS_PREFIXbr, 10.213.7.1-3/24, a private /run per node), a CPG client on node 1
# (confchg_watch.c) that kill -9's node 3's corosync and times the new totem configuration it
# is given. The counterpart of `totemcast bench --failover`.
#
# usage: failover.sh RESULTS_FILE
#   RESULT lines are appended, tagged "bench=failover rep=N impl=corosync token_ms=…
#   consensus_ms=… bound_ms=…" (token and consensus as corosync runs them: runtime.config.*)
# env: REPS (default 1), FIRST_REP (default 1, the label of the first), TOKEN (ms; default:
#      corosync's), NS_PREFIX (default tcbc), KEEP_WORK=1 (keep configs and logs)
#
# Needs root, corosync and libcpg-dev (../../../shared/bench/corosync/run.sh installs them).
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
RES=${1:?usage: failover.sh RESULTS_FILE}
REPS=${REPS:-1}
FIRST_REP=${FIRST_REP:-1}
TOKEN=${TOKEN:-}
P=${NS_PREFIX:-tcbc}
NET=10.213.7
WORK=$(mktemp -d "${TMPDIR:-/tmp}/tcbc-failover.XXXXXX")
PIDS=()

stop_nodes() {
	for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
	for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
	PIDS=()
}
cleanup() {
	set +e
	stop_nodes
	for ns in "${P}1" "${P}2" "${P}3" "${P}br"; do ip netns del "$ns" 2>/dev/null; done
	if [ -z "${KEEP_WORK:-}" ]; then rm -rf "$WORK"; else echo "failover work dir kept: $WORK" >&2; fi
}
trap cleanup EXIT

for ns in "${P}1" "${P}2" "${P}3" "${P}br"; do
	if ip netns list | grep -qw "$ns"; then
		echo "namespace $ns already exists; remove it or set NS_PREFIX" >&2
		exit 1
	fi
done
gcc -O2 -Wall -o "$WORK/confchg_watch" "$HERE/confchg_watch.c" -lcpg

# --- network (as cluster3.sh) --------------------------------------------------
ip netns add "${P}br"
ip -n "${P}br" link set lo up
ip -n "${P}br" link add br0 type bridge
ip -n "${P}br" link set br0 up
for i in 1 2 3; do
	ip netns add "${P}$i"
	ip -n "${P}$i" link set lo up
	ip -n "${P}br" link add "vb$i" type veth peer name eth0 netns "${P}$i"
	ip -n "${P}br" link set "vb$i" master br0
	ip -n "${P}br" link set "vb$i" up
	ip -n "${P}$i" addr add "$NET.$i/24" dev eth0
	ip -n "${P}$i" link set eth0 up
done

token_line=
if [ -n "$TOKEN" ]; then token_line="    token: $TOKEN"; fi
for i in 1 2 3; do
	mkdir -p "$WORK/n$i/state"
	cat >"$WORK/n$i/corosync.conf" <<CONF
totem {
    version: 2
    cluster_name: cpgbench3
    transport: knet
    crypto_cipher: none
    crypto_hash: none
$token_line
}
logging {
    to_logfile: yes
    logfile: $WORK/n$i/corosync.log
    to_stderr: no
    to_syslog: no
    timestamp: hires
}
nodelist {
    node {
        nodeid: 1
        name: n1
        ring0_addr: $NET.1
    }
    node {
        nodeid: 2
        name: n2
        ring0_addr: $NET.2
    }
    node {
        nodeid: 3
        name: n3
        ring0_addr: $NET.3
    }
}
system {
    state_dir: $WORK/n$i/state
}
CONF
done

in_ns() { local ns=$1; shift; ip netns exec "${P}$ns" "$@"; }

for rep in $(seq "$FIRST_REP" $((FIRST_REP + REPS - 1))); do
	for i in 1 2 3; do
		# `ip netns exec`, `unshare` (without --fork) and `exec` keep the pid: $! is corosync
		ip netns exec "${P}$i" unshare -m --propagation private sh -c \
			'mount -t tmpfs tmpfs /run && exec corosync -f -c "$1"' sh \
			"$WORK/n$i/corosync.conf" >>"$WORK/n$i/stdout" 2>&1 &
		PIDS+=("$!")
	done
	ok=0
	for _ in $(seq 1 120); do
		n=$(in_ns 1 corosync-cmapctl -b runtime.members 2>/dev/null |
			grep -c 'status (str) = joined' || true)
		if [ "$n" = 3 ]; then ok=1; break; fi
		sleep 0.25
	done
	if [ "$ok" != 1 ]; then
		echo "failover: membership did not reach 3 nodes" >&2
		tail -n 20 "$WORK"/n*/corosync.log >&2 || true
		exit 1
	fi
	token=$(in_ns 1 corosync-cmapctl -g runtime.config.totem.token | awk '{print $NF}')
	consensus=$(in_ns 1 corosync-cmapctl -g runtime.config.totem.consensus | awk '{print $NF}')
	bound=$(awk -v t="$token" -v c="$consensus" 'BEGIN { printf "%.0f", (t + c) * 1.2 }')
	in_ns 1 "$WORK/confchg_watch" -k "${PIDS[2]}" -n 3 -T 120 |
		sed "s/^RESULT /RESULT bench=failover rep=$rep impl=corosync token_ms=$token consensus_ms=$consensus bound_ms=$bound /" |
		grep 'role=failover' >>"$RES" || echo "FAILED: corosync failover rep $rep" >&2
	echo "corosync failover rep $rep: $(grep "bench=failover rep=$rep impl=corosync" "$RES" | tail -n 1 | grep -o 'detect_ms=[0-9.]*') (token $token ms, consensus $consensus ms)" >&2
	stop_nodes
done
