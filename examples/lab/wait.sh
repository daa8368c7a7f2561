# Sourced by lab.sh, bench.sh and bench-dns.sh.

# wait_until SECONDS CMD...: poll CMD until it succeeds or the deadline passes.
wait_until() {
	local deadline=$((SECONDS + $1))
	shift
	until "$@" >/dev/null 2>&1; do
		[ $SECONDS -lt $deadline ] || return 1
		sleep 0.05
	done
}
