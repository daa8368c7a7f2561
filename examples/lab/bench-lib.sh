# shellcheck shell=bash
# Sourced by bench.sh and bench-dns.sh: timing and the summary table, so that every table of
# `make bench` is computed and printed alike.

# now: the host clock, in seconds with microseconds.
now() { echo "$EPOCHREALTIME"; }
# sub A B: B - A in seconds, to the millisecond.
sub() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }
# stats V...: "median min max" of numbers.
stats() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { printf "%s %s %s", v[int((NR + 1) / 2)], v[1], v[NR] }'; }
# row LABEL MEDIAN MIN MAX UNIT: one line of a summary table.
row() { printf '%-48s %10s %10s %10s  %s\n' "$@"; }

# bench_cleanup: what a bench script stops before its lab goes down; it may redefine it.
bench_cleanup() { :; }

# teardown: the bench's exit trap: bench_cleanup, then the lab down (or kept with KEEP=1), and
# the script's exit status. Installed by bench_traps.
teardown() {
	local rc=$?
	trap - EXIT INT TERM
	bench_cleanup
	if [ "${KEEP:-0}" = 1 ]; then
		say "KEEP=1: lab $LAB_NAME stays up; LAB_NAME=$LAB_NAME $LAB down when done"
	else
		say "tearing the lab down"
		"$LAB" down >/dev/null 2>&1 || "$LAB" down || true
	fi
	[ $rc = 0 ] || say "FAILED (exit $rc)"
	exit $rc
}

bench_traps() {
	trap teardown EXIT
	trap 'exit 130' INT
	trap 'exit 143' TERM
}
