#!/usr/bin/env bash
# vxovl name-service benchmark: one 2-host lab (examples/lab/lab.sh), one vxovl network with its
# name server on the gateway. Prints a summary table like bench.sh's. Run as root after
# `make plugin` (or `make bench`, `make bench-dns`). Takes about 1-2 minutes.
#
#   (7) a name appears: `docker run -d --name nK` returning on host A -> the first answer with
#       nK's address on host B; (8) a name goes: `docker rm -f nK` returning on host A -> the
#       first NXDOMAIN for nK on host B. BENCH_DNS_ROUNDS rounds (20), median (p50), min and max
#       (the p99 of up to 100 rounds is their maximum).
#
# Both are measured on two paths at once, from a long-running container on host B started with
# --dns <gateway>: through Docker's embedded DNS (127.0.0.11, which forwards names of other hosts
# to the gateway: what an application sees) and straight to the gateway (vxovl's part alone).
# The pollers are the host's bash and busybox nslookup run in that container's network namespace
# (nsenter), so that every timestamp, the docker commands' too, is the host clock ($EPOCHREALTIME).
# A poller waits BENCH_DNS_POLL_MS ms (5) between a reply and its next question; the table shows
# the interval it achieved (round trip and fork included), which bounds the error of each figure.
# Faster polling costs the lab's hosts CPU: about 1 ms of a core per poll, two pollers.
#
# The pollers ask for nK.<network>, which vxovl's server answers itself (NXDOMAIN until nK is
# there). A bare nK not yet known would be forwarded to the lab's upstream DNS, where nothing
# answers: each poll would wait seconds. Both forms are the same entry of the server's table;
# each round also checks that the bare name resolves to nK's address.
#
# Environment: LAB_NAME (default vxbench), LAB_SUBNET (default 10.94.0), LAB_PLUGIN_DIR
# (default build/plugin), BENCH_DNS_ROUNDS (20), BENCH_DNS_POLL_MS (5), KEEP=1 leaves the lab up.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
LAB="$HERE/lab/lab.sh"
export LAB_NAME=${LAB_NAME:-vxbench}
export LAB_SUBNET=${LAB_SUBNET:-10.94.0}
export LAB_SUBNET=${LAB_SUBNET%.0/24}
export LAB_DIR=${LAB_DIR:-/tmp/$LAB_NAME}
export LAB_REGISTRY= # no registry needed
ROUNDS=${BENCH_DNS_ROUNDS:-20}
POLL_MS=${BENCH_DNS_POLL_MS:-5}
NET=app SUBNET=10.230.0.0/24 GATEWAY=10.230.0.1
EMBEDDED=127.0.0.11
A=1 B=2 # host A runs and removes the containers, host B resolves their names

case $LAB_SUBNET in 10.230.*)
	echo "bench-dns.sh: LAB_SUBNET $LAB_SUBNET overlaps the benchmark's overlay: pick another" >&2
	exit 2
	;;
esac
case $ROUNDS in '' | *[!0-9]* | 0)
	echo "bench-dns.sh: BENCH_DNS_ROUNDS=$ROUNDS: want a positive number" >&2
	exit 2
	;;
esac
case $POLL_MS in '' | *[!0-9]*)
	echo "bench-dns.sh: BENCH_DNS_POLL_MS=$POLL_MS: want a number of milliseconds" >&2
	exit 2
	;;
esac
BUSYBOX=$(command -v busybox) || { echo "bench-dns.sh: busybox not found: apt-get install busybox-static" >&2; exit 2; }

h() { "$LAB" docker "$@"; }
say() { printf '[bench-dns] %s\n' "$*" >&2; }
# shellcheck source=lab/wait.sh
. "$HERE/lab/wait.sh"
# shellcheck source=lab/bench-lib.sh
. "$HERE/lab/bench-lib.sh"
# ms A B: B - A in milliseconds, to a tenth (sub rounds to whole ones).
ms() { awk -v a="$1" -v b="$2" 'BEGIN { v = (b - a) * 1000; printf "%.1f", (v > -0.05 && v < 0.05) ? 0 : v }'; }

WORK=$(mktemp -d) # the pollers' output
POLLERS=()        # PIDs of the pollers of the current round
stop_pollers() {
	local pid
	for pid in "${POLLERS[@]}"; do
		kill "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
	done
	POLLERS=()
}

bench_cleanup() {
	stop_pollers
	rm -rf "$WORK"
}
bench_traps

# ---------------------------------------------------------------------------------------------
say "lab $LAB_NAME: 2 hosts on $LAB_SUBNET.0/24"
"$LAB" down >/dev/null 2>&1 || true
"$LAB" up 2 2>/dev/null
for i in $A $B; do
	"$LAB" install-plugin "$i" "PEERS=$LAB_SUBNET.$((3 - i))"
	h "$i" network create -d vxovl:latest --ipam-driver vxovl:latest \
		--subnet $SUBNET --gateway $GATEWAY $NET >/dev/null
done
h $B run -d --name resolver --network $NET --dns $GATEWAY vxovl/busybox sleep 36000 >/dev/null
RESOLVER_NS=/proc/$(h $B inspect -f '{{.State.Pid}}' resolver)/ns/net

# POLLER SERVER NAME WANT PAUSE: the host's bash in the resolver's network namespace. One
# question (A) to SERVER per round trip plus PAUSE s. Prints READY at the first answer that is
# still the old one (NXDOMAIN when WANT is "found", an address when WANT is "gone"); then, at the
# first answer that is the new one, "DONE <its time> <polls since READY> <READY's time>"; exits.
# shellcheck disable=SC2016 # expanded by the poller's bash
POLLER='srv=$1 name=$2 want=$3 pause=$4 ready= n=0
exec 3<> <(:) # read -t on a pipe that nobody writes: a sleep without a fork
while :; do
	out=$("$BUSYBOX" nslookup -type=a "$name" "$srv" 2>&1)
	t=$EPOCHREALTIME
	n=$((n + 1))
	case $want:$out in
	found:*"Name:"* | gone:*NXDOMAIN*)
		[ -n "$ready" ] || { echo "EARLY $t"; exit 1; }
		echo "DONE $t $n $t0"
		exit 0 ;;
	found:*NXDOMAIN* | gone:*"Name:"*)
		[ -n "$ready" ] || { ready=1; n=0; t0=$t; echo READY; } ;;
	esac
	read -r -t "$pause" -u 3
done'
export BUSYBOX

# poll WANT NAME: starts one poller per path (embedded, gateway) and waits until both are READY.
poll() {
	local want=$1 name=$2 path srv pause
	pause=$(awk -v m="$POLL_MS" 'BEGIN { printf "%.3f", m / 1000 }')
	for path in embedded gateway; do
		srv=$EMBEDDED
		[ $path = gateway ] && srv=$GATEWAY
		nsenter --net="$RESOLVER_NS" bash -c "$POLLER" poller "$srv" "$name" "$want" "$pause" \
			>"$WORK/$path" 2>&1 &
		POLLERS+=($!)
	done
	for path in embedded gateway; do
		wait_until 15 grep -q '^READY' "$WORK/$path" || {
			say "$path poller for $name ($want) not ready within 15s: $(cat "$WORK/$path")"
			return 1
		}
	done
}

# collect KEY T0 T1: waits for both pollers; appends the time from T1 (the docker command's
# return) to each path's first new answer, in ms, to D[KEY-path], the time from T0 (its start)
# to the embedded path's to D[KEY-start], and each path's mean poll interval to D[poll-path].
declare -A D
collect() {
	local key=$1 t0=$2 t1=$3 path t_done polls t_ready
	for path in embedded gateway; do
		wait_until 15 grep -q '^DONE' "$WORK/$path" || {
			say "$key: $path poller did not see the change within 15s: $(cat "$WORK/$path")"
			return 1
		}
		read -r _ t_done polls t_ready < <(grep '^DONE' "$WORK/$path")
		D[$key-$path]+=" $(ms "$t1" "$t_done")"
		[ $path = gateway ] || D[$key-start]+=" $(ms "$t0" "$t_done")"
		D[poll-$path]+=" $(awk -v a="$t_ready" -v b="$t_done" -v n="$polls" 'BEGIN { printf "%.1f", (b - a) / n * 1000 }')"
	done
	stop_pollers
}

# lookup SERVER NAME: the address the resolver gets for NAME.
lookup() {
	nsenter --net="$RESOLVER_NS" "$BUSYBOX" nslookup -type=a "$2" "$1" 2>/dev/null |
		awk '/^Name:/ { found = 1 } found && /^Address:/ { print $2; exit }'
}

say "$ROUNDS rounds: run -d / rm -f nK on host $A, nK.$NET polled on host $B (${POLL_MS}ms between polls)"
for k in $(seq 1 "$ROUNDS"); do
	name=n$k
	poll found "$name.$NET"
	t0=$(now)
	h $A run -d --name "$name" --network $NET vxovl/busybox sleep 3600 >/dev/null
	t1=$(now)
	collect found "$t0" "$t1"
	D[run]+=" $(sub "$t0" "$t1")"
	want=$(h $A inspect -f "{{(index .NetworkSettings.Networks \"$NET\").IPAddress}}" "$name")
	got=$(lookup $EMBEDDED "$name")
	[ "$got" = "$want" ] || { say "$name: bare name resolves to '$got' on host $B, not to $want"; exit 1; }

	poll gone "$name.$NET"
	t0=$(now)
	h $A rm -f "$name" >/dev/null
	t1=$(now)
	collect gone "$t0" "$t1"
	D[rm]+=" $(sub "$t0" "$t1")"
	say "round $k: $name resolves after ${D[found-embedded]##* } / ${D[found-gateway]##* } ms, gone after ${D[gone-embedded]##* } / ${D[gone-gateway]##* } ms (embedded / gateway)"
done

# ---------------------------------------------------------------------------------------------
# shellcheck disable=SC2046,SC2086
{
	echo
	echo "vxovl DNS bench: $(date -u +%Y-%m-%dT%H:%MZ), kernel $(uname -r), $(nproc) CPUs, docker $(h $A version -f '{{.Server.Version}}'), $ROUNDS rounds"
	row "measure" "median" "min" "max" "unit"
	row "------------------------------------------------" "------" "---" "---" "----"
	r() { local label=$1 key=$2 unit=$3; set -- $(stats ${D[$key]}); row "$label" "$1" "$2" "$3" "$unit"; }
	r "(7) name resolves, embedded DNS: run -d returned" found-embedded ms
	r "(7) name resolves, gateway DNS: run -d returned" found-gateway ms
	r "(8) name gone, embedded DNS: rm -f returned" gone-embedded ms
	r "(8) name gone, gateway DNS: rm -f returned" gone-gateway ms
	r "(7) name resolves, embedded DNS: run -d started" found-start ms
	r "(8) name gone, embedded DNS: rm -f started" gone-start ms
	r "(7) docker run -d, vxovl" run s
	r "(8) docker rm -f, vxovl" rm s
	r "poll interval, embedded DNS (bounds the error)" poll-embedded ms
	r "poll interval, gateway DNS" poll-gateway ms
	echo "median = p50; max = p99 of up to 100 rounds. Names polled as nK.$NET (see bench-dns.sh); the"
	echo "first answer may precede the docker command's return (a negative time)."
}
