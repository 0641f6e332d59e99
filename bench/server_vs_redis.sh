#!/usr/bin/env bash
# server_vs_redis.sh: redis-benchmark against velad and Debian's redis-server
# in the same run, back to back, best of N rounds.
#
# Servers (each on its own free port, each in its own temp directory):
#   redis      redis-server --save '' --appendonly no  (in memory, NOT durable)
#   velad      velad, default appendfsync always        (fsync per group commit)
#   velad-es   velad --appendfsync everysec             (MDB_NOSYNC + periodic sync)
# Tests: redis-benchmark -q -t ping,set,get,hset -n N -c C, once without
# pipelining and once with -P 16. In each round every server runs each
# pipeline depth once; the server order rotates between rounds so noise from
# other tenants spreads over all of them. The table shows the best requests/s
# of the rounds and the ratio velad/redis (target >= 0.8).
#
# Usage: bench/server_vs_redis.sh [velad-path]
# Environment: ROUNDS (3), N (100000), CLIENTS (50), PIPE (16),
#              TESTS (ping,set,get,hset), REDIS_SERVER (redis-server),
#              REDIS_BENCHMARK (redis-benchmark), KEEP=1 keeps the temp dir.
# Exits nonzero if a server fails to start or a benchmark run fails.
set -euo pipefail

VELAD=${1:-build/release/velad}
ROUNDS=${ROUNDS:-3}
N=${N:-100000}
CLIENTS=${CLIENTS:-50}
PIPE=${PIPE:-16}
TESTS=${TESTS:-ping,set,get,hset}
REDIS_SERVER=${REDIS_SERVER:-redis-server}
REDIS_BENCHMARK=${REDIS_BENCHMARK:-redis-benchmark}

die() { echo "server_vs_redis: $*" >&2; exit 1; }
[ -x "$VELAD" ] || die "velad not found at $VELAD (build: cmake --build build/release --target velad)"
command -v "$REDIS_SERVER" >/dev/null || die "$REDIS_SERVER not found"
command -v "$REDIS_BENCHMARK" >/dev/null || die "$REDIS_BENCHMARK not found"
command -v redis-cli >/dev/null || die "redis-cli not found"

TMP=$(mktemp -d /tmp/vela-svr.XXXXXX)
declare -A PID PORT
cleanup() {
	for s in "${!PID[@]}"; do
		kill -TERM "${PID[$s]}" 2>/dev/null || true
	done
	for s in "${!PID[@]}"; do
		wait "${PID[$s]}" 2>/dev/null || true
	done
	if [ "${KEEP:-0}" = 1 ]; then echo "kept $TMP" >&2; else rm -rf "$TMP"; fi
}
trap cleanup EXIT

# A port nothing listens on (the kernel picks it; a race with another
# process binding it in between is possible but unlikely).
free_port() {
	python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# start NAME CMD...: run CMD in the background, wait until it answers PING.
start() {
	local name=$1; shift
	local port; port=$(free_port)
	mkdir -p "$TMP/$name"
	"$@" --port "$port" --dir "$TMP/$name" >"$TMP/$name.log" 2>&1 &
	PID[$name]=$!
	PORT[$name]=$port
	for _ in $(seq 100); do
		if [ "$(redis-cli -p "$port" ping 2>/dev/null)" = PONG ]; then
			return 0
		fi
		kill -0 "${PID[$name]}" 2>/dev/null || break
		sleep 0.1
	done
	echo "server_vs_redis: $name failed to start; its log:" >&2
	cat "$TMP/$name.log" >&2
	exit 1
}

start redis "$REDIS_SERVER" --bind 127.0.0.1 --save '' --appendonly no
start velad "$VELAD" --bind 127.0.0.1 --appendfsync always
start velad-es "$VELAD" --bind 127.0.0.1 --appendfsync everysec

SERVERS=(redis velad velad-es)
declare -A BEST  # BEST[server,pipe,test] = best rps
TESTNAMES=()

run_one() { # server pipe -> updates BEST
	local s=$1 p=$2 out
	out=$("$REDIS_BENCHMARK" -p "${PORT[$s]}" -q -t "$TESTS" -n "$N" -c "$CLIENTS" -P "$p" --csv) ||
		die "redis-benchmark failed against $s (-P $p)"
	kill -0 "${PID[$s]}" 2>/dev/null || die "$s died during the run (log: $TMP/$s.log)"
	while IFS=, read -r test rps _; do
		test=${test//\"/}; rps=${rps//\"/}
		[ "$test" = test ] && continue
		[ -z "$test" ] && continue
		local k="$s,$p,$test"
		if [ -z "${BEST[$k]:-}" ] || awk -v a="$rps" -v b="${BEST[$k]}" 'BEGIN{exit !(a>b)}'; then
			BEST[$k]=$rps
		fi
		if [[ " ${TESTNAMES[*]} " != *" $test "* ]]; then TESTNAMES+=("$test"); fi
	done <<<"$out"
}

echo "server_vs_redis: N=$N clients=$CLIENTS tests=$TESTS rounds=$ROUNDS pipeline=1,$PIPE"
echo "  redis:    $("$REDIS_SERVER" --version | head -1)  --save '' --appendonly no (port ${PORT[redis]})"
echo "  velad:    $VELAD --appendfsync always (port ${PORT[velad]})"
echo "  velad-es: $VELAD --appendfsync everysec (port ${PORT[velad-es]})"
echo "  host: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
for r in $(seq "$ROUNDS"); do
	# rotate the order: round 1 redis,velad,velad-es; round 2 velad,velad-es,redis; ...
	order=()
	for i in 0 1 2; do order+=("${SERVERS[$(((i + r - 1) % 3))]}"); done
	for p in 1 "$PIPE"; do
		for s in "${order[@]}"; do
			echo "  round $r/$ROUNDS -P $p: $s" >&2
			run_one "$s" "$p"
		done
	done
done

printf '\nrequests/s, best of %s (c=%s, n=%s); ratio = velad/redis\n' "$ROUNDS" "$CLIENTS" "$N"
for p in 1 "$PIPE"; do
	printf '\n-P %-3s %-12s %12s %12s %12s %9s %9s\n' "$p" test redis velad velad-es \
		"velad/r" "ves/r"
	for t in "${TESTNAMES[@]}"; do
		r=${BEST[redis,$p,$t]:-0} v=${BEST[velad,$p,$t]:-0} e=${BEST[velad-es,$p,$t]:-0}
		awk -v t="$t" -v r="$r" -v v="$v" -v e="$e" 'BEGIN {
			printf "       %-12s %12.0f %12.0f %12.0f %8.2fx %8.2fx\n", t, r, v, e,
				(r > 0 ? v / r : 0), (r > 0 ? e / r : 0) }'
	done
done
echo
echo "apples to apples: redis (appendonly no) is not durable; compare it with velad-es"
echo "(appendfsync everysec). The velad column fsyncs every group commit (SET, HSET)."
