#!/usr/bin/env bash
# vxovl benchmark: one 2-host lab (examples/lab/lab.sh), vxovl side by side with the underlay and
# with Docker's native overlay (swarm mode). Prints a summary table to paste into issue notes.
# Run as root after `make plugin` (or `make bench`). Takes about 2-3 minutes.
#
#   (1) underlay host-to-host iperf3, (2) vxovl and (3) native overlay container-to-container
#   iperf3 across hosts (one TCP stream, BENCH_SECS s, median/min/max of BENCH_RUNS);
#   (4) convergence: `docker run -d` returning on host 2 -> first ping reply in a container on
#   host 1 that was already pinging the new container's address; (5) `docker run -d` duration
#   and vxovl's restart-to-serving time after kill -9; (6) MTU inside the containers.
#
# Environment: LAB_NAME (default vxbench), LAB_SUBNET (default 10.94.0), LAB_PLUGIN_DIR
# (default build/plugin), BENCH_RUNS (3), BENCH_SECS (5), KEEP=1 leaves the lab up.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
LAB="$HERE/lab/lab.sh"
export LAB_NAME=${LAB_NAME:-vxbench}
export LAB_SUBNET=${LAB_SUBNET:-10.94.0}
export LAB_SUBNET=${LAB_SUBNET%.0/24}
export LAB_DIR=${LAB_DIR:-/tmp/$LAB_NAME}
export LAB_REGISTRY= # no registry needed
RUNS=${BENCH_RUNS:-3}
SECS=${BENCH_SECS:-5}
VXLAN_PORT=4790 # the native overlay holds 4789 in the same hosts
VXNET=10.211.0.0/24 VXPFX=10.211.0
NATNET=10.212.0.0/24 NATPFX=10.212.0
SWARM_POOL=10.213.0.0/16 # swarm's default 10.0.0.0/8 would overlap the lab's underlay
A=1 B=2                  # host A pings and serves, host B runs clients and new containers

case $LAB_SUBNET in 10.211.* | 10.212.* | 10.213.*)
	echo "bench.sh: LAB_SUBNET $LAB_SUBNET overlaps the benchmark's overlays: pick another" >&2
	exit 2
	;;
esac

h() { "$LAB" docker "$@"; }
say() { printf '[bench] %s\n' "$*" >&2; }
# shellcheck source=lab/wait.sh
. "$HERE/lab/wait.sh"
# shellcheck source=lab/bench-lib.sh
. "$HERE/lab/bench-lib.sh"

bench_traps

declare -A R # results by key

# ---------------------------------------------------------------------------------------------
say "lab $LAB_NAME: 2 hosts on $LAB_SUBNET.0/24"
"$LAB" down >/dev/null 2>&1 || true
"$LAB" up 2 2>/dev/null

# vxovl before swarm: a plugin enabled after swarm init/join is advertised only ~15 s later.
for i in $A $B; do
	peer=$((3 - i))
	"$LAB" install-plugin "$i" "PEERS=$LAB_SUBNET.$peer" "VXLAN_PORT=$VXLAN_PORT"
done
say "swarm: init on host $A, join from host $B (address pool $SWARM_POOL)"
h $A swarm init --advertise-addr "$LAB_SUBNET.$A" --listen-addr "$LAB_SUBNET.$A:2377" \
	--default-addr-pool "$SWARM_POOL" >/dev/null
h $B swarm join --token "$(h $A swarm join-token -q worker)" --advertise-addr "$LAB_SUBNET.$B" \
	"$LAB_SUBNET.$A:2377" >/dev/null

# Networks: vxovl on every host (cluster-wide IPAM), the native overlay once on the manager.
t0=$(now)
for i in $A $B; do
	h "$i" network create -d vxovl:latest --ipam-driver vxovl:latest --subnet $VXNET vx >/dev/null
done
h $A network create -d overlay --attachable --subnet $NATNET nat >/dev/null
say "networks created ($(sub "$t0" "$(now)")s)"

# ---------------------------------------------------------------------------------------------
# throughput

# iperf_gbps CMD...: one iperf3 client run (JSON) -> receiver Gbit/s.
iperf_gbps() {
	timeout $((SECS + 20)) "$@" -t "$SECS" --connect-timeout 2000 -J | jq -r '.end.sum_received.bits_per_second / 1e9 | . * 100 | round / 100'
}

container_ip() { h "$1" inspect -f "{{(index .NetworkSettings.Networks \"$3\").IPAddress}}" "$2"; }

# Servers on host A, clients on host B; -n in the probes: iperf3 -t takes whole seconds and
# -t 0 means forever.
"$LAB" exec $A iperf3 -s -D -B "$LAB_SUBNET.$A" --pidfile "$LAB_DIR/iperf-underlay.pid"
wait_until 10 "$LAB" exec $B timeout 5 iperf3 -c "$LAB_SUBNET.$A" -n 1K --connect-timeout 500 ||
	{ say "underlay: iperf3 client cannot reach $LAB_SUBNET.$A"; exit 1; }
declare -A SRV
for net in vx nat; do
	h $A run -d --name "srv-$net" --network $net vxovl/iperf3 >/dev/null
	h $B run -d --name "cli-$net" --network $net vxovl/iperf3 sleep 3600 >/dev/null
	SRV[$net]=$(container_ip $A "srv-$net" $net)
	wait_until 20 h $B exec "cli-$net" timeout 5 iperf3 -c "${SRV[$net]}" -n 1K --connect-timeout 500 ||
		{ say "$net: iperf3 client cannot reach ${SRV[$net]}"; exit 1; }
	R[mtu-$net]=$(h $B exec "cli-$net" cat /sys/class/net/eth0/mtu)
done

# Interleaved (underlay, vxovl, native, underlay, ...), so that a load change on a shared
# machine hits all three alike.
say "(1-3) iperf3 host $B -> host $A: underlay, vxovl, native overlay; $RUNS x ${SECS}s each"
declare -A V
for k in $(seq 1 "$RUNS"); do
	V[underlay]+=" $(iperf_gbps "$LAB" exec $B iperf3 -c "$LAB_SUBNET.$A")"
	for net in vx nat; do
		V[$net]+=" $(iperf_gbps "$LAB" docker $B exec "cli-$net" iperf3 -c "${SRV[$net]}")"
	done
	say "run $k: underlay ${V[underlay]##* }, vx ${V[vx]##* }, nat ${V[nat]##* } Gbit/s"
done
for key in underlay vx nat; do
	# shellcheck disable=SC2086
	R[$key]=$(stats ${V[$key]})
	say "$key:${V[$key]} Gbit/s"
done
kill "$(cat "$LAB_DIR/iperf-underlay.pid")" 2>/dev/null || true

# ---------------------------------------------------------------------------------------------
# convergence and docker run

# The pinger prints "SEC.USEC" of the first reply (adjtimex: busybox date has no sub-second
# format), then exits. ping is restarted when it gives up on an unresolved address.
PINGER='while [ ! -e /tmp/done ]; do ping -i 0.01 -w 5 "$0" 2>&1; done | while read -r l; do
	case $l in *"bytes from"*)
		adjtimex | awk "/tv_sec/ { s = \$2 } /tv_usec/ { u = \$2 } END { printf \"FIRST %d.%06d\n\", s, u }"
		touch /tmp/done
		exit ;;
	PING*) echo "$l" ;;
	esac
done'

# converge NET IP: time from `docker run -d` returning on host B to the first ping reply seen on
# host A; also records the run's duration.
converge() {
	local net=$1 ip=$2 name t0 t1 first
	name="p-$net-${ip##*.}"
	h $A run -d --name "$name" --network $net vxovl/busybox sh -c "$PINGER" "$ip" >/dev/null
	wait_until 10 sh -c "$LAB docker $A logs $name 2>&1 | grep -q ^PING" || { say "pinger $name did not start"; return 1; }
	sleep 0.3 # let the pinger run a while: the address must be unresolved when B starts
	t0=$(now)
	h $B run -d --name "t-$net-${ip##*.}" --network $net --ip "$ip" vxovl/busybox sleep 3600 >/dev/null
	t1=$(now)
	wait_until 15 sh -c "$LAB docker $A logs $name 2>&1 | grep -q ^FIRST" || { say "$net: no reply from $ip within 15s"; return 1; }
	first=$(h $A logs "$name" 2>&1 | awk '/^FIRST/ { print $2 }')
	CONV=$(sub "$t1" "$first")
	CONV0=$(sub "$t0" "$first")
	RUN=$(sub "$t0" "$t1")
}

for net in vx nat; do
	pfx=$([ $net = vx ] && echo $VXPFX || echo $NATPFX)
	conv=() conv0=() run=()
	for k in $(seq 1 "$RUNS"); do
		converge $net "$pfx.$((200 + k))"
		conv+=("$(awk -v s="$CONV" 'BEGIN { printf "%.1f", s * 1000 }')")
		conv0+=("$(awk -v s="$CONV0" 'BEGIN { printf "%.1f", s * 1000 }')")
		run+=("$RUN")
	done
	R[conv-$net]=$(stats "${conv[@]}")
	R[conv0-$net]=$(stats "${conv0[@]}")
	R[run-$net]=$(stats "${run[@]}")
	say "$net: convergence ${conv[*]} ms; docker run ${run[*]} s"
done

# ---------------------------------------------------------------------------------------------
# plugin restart: kill -9 -> dockerd restarts it -> its socket answers again

plugin_id=$(h $A plugin inspect -f '{{.Id}}' vxovl)
# The socket as dockerd sees it (lab.sh binds the host's run-plugins dir at /run/docker/plugins).
sockdir=$LAB_DIR/h$A/run-plugins/$plugin_id
task=$LAB_DIR/h$A/exec/containerd/daemon/io.containerd.runtime.v2.task/plugins.moby/$plugin_id
plugin_pid() { cat "$task/init.pid" 2>/dev/null || true; }
# cd: the socket's full path may be longer than a unix socket address allows.
answers() { (cd "$sockdir" 2>/dev/null && curl -sf -m 1 --unix-socket vxovl.sock http://plugin/vxovl/state >/dev/null 2>&1); }
restart=() lost=0
for _ in $(seq 1 "$RUNS"); do
	wait_until 15 answers || { say "plugin on host $A does not answer before the kill"; exit 1; }
	old=$(plugin_pid)
	[ "$(basename "$(readlink "/proc/$old/exe" || true)")" = vxovl ] || { say "plugin pid $old is not vxovl"; exit 1; }
	t0=$(now)
	kill -KILL "$old"
	deadline=$((SECONDS + 15))
	until [ "$(plugin_pid)" != "$old" ] && answers; do
		[ $SECONDS -lt $deadline ] || break
		sleep 0.01
	done
	if [ $SECONDS -lt $deadline ]; then
		restart+=("$(sub "$t0" "$(now)")")
	else
		# Seen with docker.io 20.10.24: a plugin killed again after dockerd restarted it once is
		# not restarted (no exit handled, still "enabled"); its next use disables it.
		lost=$((lost + 1))
		say "restart: no new plugin process serving within 15s (dockerd says enabled: $(h $A plugin inspect -f '{{.Enabled}}' vxovl)); disable -f + enable"
		h $A plugin disable -f vxovl >/dev/null 2>&1 || true
		h $A plugin enable vxovl >/dev/null
	fi
done
if [ ${#restart[@]} -gt 0 ]; then R[restart]=$(stats "${restart[@]}"); else R[restart]="- - -"; fi
R[restart-lost]=$lost
say "restart-to-serving: ${restart[*]} s"

# The vxlan devices of both overlays on host A, for the record (flags, port, checksums, MTU).
vxdev() { nsenter --net="$1" ip -d link show type vxlan 2>/dev/null | awk '/^[0-9]+:/ { m = "mtu " $5 } /vxlan id/ { sub(/^ +/, ""); print m ", " $0; exit }'; }
DEV_VX=$(for ns in $("$LAB" overlays $A); do vxdev "$ns"; done | head -1)
NAT_ID=$(h $A network inspect -f '{{.Id}}' nat | cut -c1-10)
DEV_NAT=$(for ns in "$LAB_DIR/h$A"/exec/netns/1-"$NAT_ID"*; do [ -e "$ns" ] && vxdev "$ns"; done | head -1)

# ---------------------------------------------------------------------------------------------
# shellcheck disable=SC2046
{
	echo
	echo "vxovl bench: $(date -u +%Y-%m-%dT%H:%MZ), kernel $(uname -r), $(nproc) CPUs, docker $(h $A version -f '{{.Server.Version}}'), $RUNS runs"
	row "measure" "median" "min" "max" "unit"
	row "------------------------------------------------" "------" "---" "---" "----"
	r() { local label=$1 key=$2 unit=$3; set -- ${R[$key]}; row "$label" "$1" "$2" "$3" "$unit"; }
	r "(1) underlay host-to-host iperf3 (1 TCP, ${SECS}s)" underlay Gbit/s
	r "(2) vxovl container-to-container iperf3" vx Gbit/s
	r "(3) native overlay (swarm) ctr-to-ctr iperf3" nat Gbit/s
	r "(4) convergence vxovl: run -d returned -> reply" conv-vx ms
	r "(4) convergence native: run -d returned -> reply" conv-nat ms
	r "(4) convergence vxovl: run -d started -> reply" conv0-vx ms
	r "(4) convergence native: run -d started -> reply" conv0-nat ms
	r "(5) docker run -d, vxovl" run-vx s
	r "(5) docker run -d, native overlay" run-nat s
	r "(5) vxovl restart-to-serving (kill -9)" restart "s (not serving within 15s: ${R[restart-lost]} of $RUNS)"
	row "(6) MTU in container: vxovl / native" "${R[mtu-vx]}" "${R[mtu-nat]}" "" ""
	echo "vxlan device, vxovl:  ${DEV_VX:-?}"
	echo "vxlan device, native: ${DEV_NAT:-?}"
}
