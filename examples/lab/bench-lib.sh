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
