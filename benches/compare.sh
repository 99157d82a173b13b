#!/usr/bin/env bash
# compare.sh - `make bench-compare`: Corosync 3.1.7's harness (../shared/bench/corosync/run.sh)
# and `totemcast bench`, interleaved in one run on this machine; then `totemcast bench report`
# prints per scenario both figures, the ratio, and the goals of ARCHITECTURE.md §4 and
# whether they are met, and writes benches/RESULTS.md.
#
# How the two are interleaved, and why. The machine is shared (other engineers' compiles and
# tests come and go over minutes), so the load drifts during a run that takes minutes to an
# hour. A ratio is only unbiased if both of its figures saw the same load. So the run is cut
# into slots of one message size each: a Corosync slot is one run.sh invocation with
# SIZES=<that size> (its one-node send, zcb send, fan-out and ping-pong, then its 3-node
# cluster3.sh part: send, fan-out, round trip), and our slot runs the same scenarios for that
# size (plus our variants: batched sends, SAFE). The two slots of a size run back to back,
# tens of seconds apart, and which side goes first alternates from size to size and from round
# to round (ABBA), so a steady drift in load adds as much to one side as to the other. Each
# round labels its lines rep=<round>; the report takes the ratio within each round (the two
# adjacent slots) and then the median over rounds, never a ratio of figures measured far
# apart. The failure-detection runs alternate the same way; the memory figure is ours only.
# (Running Corosync's whole harness, then ours, then Corosync's one-node part again would
# bracket our one-node figures but leave 10-40 minutes between the two sides of the 3-node
# figures.)
#
# env: MODE=quick|full (default full)   OUT=benches/RESULTS.md   TOTEMCAST_BIN=path
#      PLOTS=dir for the PNG charts (default benches/plots, git-ignored; PLOTS= for none),
#      drawn by `totemcast bench report --plot` with matplotlib in TOTEMCAST_PYTHON (default:
#      PYTHON, else python3); without matplotlib a note says so and the rest is unchanged
#      ROUNDS, DURATION, SIZES, LAT_ITERS, LAT_ITERS_CLUSTER3, TOKEN, FAILOVER_REPS override
#      the mode's values; PYTHON=interpreter with the extension built (make build-release)
#      or PYTHON_WORKER='cmd args' adds the Python client's scenarios.
#      KEEP_WORK=1 keeps the logs too; the raw results are always copied to RAW (default
#      benches/raw, git-ignored), so that `totemcast bench report` can redraw RESULTS.md.
# Needs root (corosync, network namespaces); run.sh installs corosync with apt when missing.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
HARNESS=${COROSYNC_HARNESS:-$ROOT/../shared/bench/corosync}
MODE=${MODE:-full}
case "$MODE" in
quick)
	: "${ROUNDS:=1}" "${DURATION:=1}" "${LAT_ITERS:=2000}" "${LAT_ITERS_CLUSTER3:=1000}"
	: "${TOKEN:=1000}" "${FAILOVER_REPS:=2}"
	MEMORY_FLAGS=--quick
	;;
full)
	# TOKEN empty: Corosync's default timers (token 3000 ms + 650 ms per node beyond two).
	: "${ROUNDS:=3}" "${DURATION:=5}" "${LAT_ITERS:=20000}" "${LAT_ITERS_CLUSTER3:=5000}"
	: "${TOKEN:=}" "${FAILOVER_REPS:=3}"
	MEMORY_FLAGS=
	;;
*)
	echo "compare.sh: MODE is quick or full, not $MODE" >&2
	exit 1
	;;
esac
SIZES=${SIZES:-"64 1024 16384 65536"}
OUT=${OUT:-$ROOT/benches/RESULTS.md}
PLOTS=${PLOTS-$ROOT/benches/plots}
BIN=${TOTEMCAST_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/totemcast}
if [ "$(id -u)" != 0 ]; then
	echo "compare.sh: needs root (corosync, network namespaces)" >&2
	exit 1
fi
if [ ! -x "$BIN" ]; then
	echo "compare.sh: no $BIN; run: cargo build --release --bin totemcast" >&2
	exit 1
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/tcb-compare.XXXXXX")
cleanup() {
	if [ -z "${KEEP_WORK:-}" ]; then rm -rf "$WORK"; else echo "compare: work dir kept: $WORK" >&2; fi
}
trap cleanup EXIT
CS=$WORK/corosync.txt
OURS=$WORK/totemcast.txt
NOTES=$WORK/run-notes.txt
: >"$CS"
: >"$OURS"
say() { echo "== $*" >&2; }
{
	echo "# date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
	echo "# mode: $MODE (rounds $ROUNDS, ${DURATION} s per throughput run, sizes $SIZES, round trips $LAT_ITERS on 1 node / $LAT_ITERS_CLUSTER3 on 3 nodes, token ${TOKEN:-default})"
	echo "# cores: $(nproc)"
	echo "# memory: $(awk '/MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo)"
	echo "# load_start: $(cat /proc/loadavg)"
	echo "# interleaving: per size, one Corosync run.sh slot and one totemcast slot back to back, order alternating (ABBA) over sizes and rounds; ratios per round, median over rounds"
} >"$NOTES"
# The Python client's scenarios, when the interpreter has the extension (make build-release).
if [ -z "${PYTHON_WORKER:-}" ] && [ -n "${PYTHON:-}" ] &&
	"$PYTHON" -c 'from totemcast.cpg import Handle' 2>/dev/null; then
	PYTHON_WORKER="$PYTHON $ROOT/benches/python/cpgbench.py"
fi
PY_ARGS=()
if [ -n "${PYTHON_WORKER:-}" ]; then
	PY_ARGS=(--python-worker "$PYTHON_WORKER")
	echo "# python: $("${PYTHON_WORKER%% *}" -c 'import sys, totemcast; print(sys.version.split()[0], "totemcast", totemcast.__version__)' 2>/dev/null || echo '?')" >>"$NOTES"
else
	echo "# python: not measured (no interpreter with the totemcast extension; PYTHON=.venv/bin/python after make build-release)" >>"$NOTES"
fi

corosync_slot() { # round size
	say "round $1, $2 B: Corosync (run.sh SIZES=$2)"
	rm -f "$WORK/slot.txt"
	if ! SIZES="$2" REPS=1 REPS_CLUSTER3=1 DURATION="$DURATION" LAT_ITERS="$LAT_ITERS" \
		LAT_ITERS_CLUSTER3="$LAT_ITERS_CLUSTER3" NS_PREFIX=tcbc RESULTS_OUT="$WORK/slot.txt" \
		"$HARNESS/run.sh" >>"$WORK/corosync.log" 2>&1; then
		say "Corosync slot failed (see $WORK/corosync.log; KEEP_WORK=1 keeps it)"
	fi
	if [ -e "$WORK/slot.txt" ]; then
		sed "s/^\(RESULT bench=[^ ]*\) rep=[^ ]* /\1 rep=$1 /" "$WORK/slot.txt" >>"$CS"
	fi
}
ours_slot() { # round size
	say "round $1, $2 B: totemcast (totemcast bench --sizes $2)"
	rm -f "$WORK/slot.txt"
	"$BIN" bench --sizes "$2" --reps 1 --first-rep "$1" --duration "$DURATION" \
		--lat-iters "$LAT_ITERS" --lat-iters-cluster3 "$LAT_ITERS_CLUSTER3" \
		"${PY_ARGS[@]}" --results-out "$WORK/slot.txt" >>"$WORK/totemcast.log" ||
		say "totemcast slot had failures (see above)"
	if [ -e "$WORK/slot.txt" ]; then cat "$WORK/slot.txt" >>"$OURS"; fi
}

index=0
for round in $(seq 1 "$ROUNDS"); do
	for size in $SIZES; do
		if [ $(((round + index) % 2)) = 1 ]; then
			corosync_slot "$round" "$size"
			ours_slot "$round" "$size"
		else
			ours_slot "$round" "$size"
			corosync_slot "$round" "$size"
		fi
		index=$((index + 1))
	done
done

say "failure detection: kill -9 of node 3, $FAILOVER_REPS times each, alternating"
for rep in $(seq 1 "$FAILOVER_REPS"); do
	corosync_failover() {
		REPS=1 FIRST_REP="$rep" TOKEN="$TOKEN" NS_PREFIX=tcbc \
			"$ROOT/benches/corosync/failover.sh" "$CS" 2>>"$WORK/failover.log" ||
			say "Corosync failover rep $rep failed (see $WORK/failover.log)"
	}
	ours_failover() {
		"$BIN" bench --failover --failover-reps 1 --first-rep "$rep" ${TOKEN:+--token "$TOKEN"} \
			--results-out "$WORK/slot.txt" >>"$WORK/totemcast.log" &&
			cat "$WORK/slot.txt" >>"$OURS" || say "totemcast failover rep $rep failed"
	}
	if [ $((rep % 2)) = 1 ]; then corosync_failover; ours_failover; else ours_failover; corosync_failover; fi
done

say "memory (totemcast)"
# shellcheck disable=SC2086
"$BIN" bench --memory $MEMORY_FLAGS --results-out "$WORK/slot.txt" >>"$WORK/totemcast.log" &&
	cat "$WORK/slot.txt" >>"$OURS" || say "memory scenarios failed"

echo "# load_end: $(cat /proc/loadavg)" >>"$NOTES"
RAW=${RAW:-$ROOT/benches/raw}
mkdir -p "$RAW" && cp "$CS" "$OURS" "$NOTES" "$RAW/" && say "raw results: $RAW"
PLOT_ARGS=()
if [ -n "$PLOTS" ]; then
	PLOT_ARGS=(--plot "$PLOTS")
	# The charts are drawn by the totemcast Python package (with matplotlib) of this interpreter.
	if [ -z "${TOTEMCAST_PYTHON:-}" ] && [ -n "${PYTHON:-}" ]; then export TOTEMCAST_PYTHON="$PYTHON"; fi
fi
"$BIN" bench report --ours "$NOTES" --ours "$OURS" --corosync "$CS" --mode "$MODE" --markdown "$OUT" \
	"${PLOT_ARGS[@]}"
