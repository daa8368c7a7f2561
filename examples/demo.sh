#!/usr/bin/env bash
# vxovl demo: three Docker hosts (network namespaces on this machine), one overlay across them.
# Run as root after `make plugin` (or simply `make demo`). KEEP=1 leaves the lab up to explore.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
LAB="$HERE/lab/lab.sh"
export LAB_NAME=${LAB_NAME:-vxlab}
export LAB_SUBNET=${LAB_SUBNET:-10.98.0}
N=3
NET=demo
SUBNET=10.210.0.0/24
GATEWAY=10.210.0.1 # also the network's name server: containers pass it as --dns

step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
h() { "$LAB" docker "$@"; }
elapsed() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.2f", b - a }'; }

teardown() {
	local rc=$?
	trap - EXIT INT TERM
	if [ "${KEEP:-0}" = 1 ] && [ $rc = 0 ]; then
		step "KEEP=1: the lab stays up. Try:"
		cat <<-EOF
			  $LAB status
			  $LAB docker 1 ps
			  $LAB docker 2 exec web2 ping -c3 web1                  # by name, across hosts
			  $LAB docker 2 exec web2 nslookup web3.$NET
			  $LAB docker 1 logs \$($LAB docker 1 plugin inspect -f '{{.Id}}' vxovl | cut -c1-12) 2>/dev/null || grep plugin= /tmp/$LAB_NAME/h1/dockerd.log
			  nsenter --net=\$($LAB overlays 1 | head -1) ip -d link    # host 1's overlay namespace
			  $LAB exec 1 ip addr                                     # host 1's underlay
			  LAB_NAME=$LAB_NAME $LAB down                            # when done
		EOF
		exit 0
	fi
	step "Tearing the lab down"
	"$LAB" down || true
	exit $rc
}
trap teardown EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

step "Bringing up a $N-host lab: hosts $LAB_SUBNET.1-$N, one dockerd each, underlay bridge in its own namespace"
"$LAB" down >/dev/null 2>&1 || true
"$LAB" up $N

step "Installing vxovl on every host (PEERS = the other hosts, ADVERTISE_ADDR = its own underlay address)"
for i in $(seq 1 $N); do
	peers=$(for j in $(seq 1 $N); do [ "$j" = "$i" ] || printf '%s.%s,' "$LAB_SUBNET" "$j"; done)
	start=$EPOCHREALTIME
	"$LAB" install-plugin "$i" "PEERS=${peers%,}" "ADVERTISE_ADDR=$LAB_SUBNET.$i"
	echo "host $i: vxovl enabled in $(elapsed "$start")s (PEERS=${peers%,})"
done

step "Creating network '$NET' ($SUBNET) on every host, addresses from vxovl's cluster-wide IPAM"
for i in $(seq 1 $N); do
	h "$i" network create -d vxovl:latest --ipam-driver vxovl:latest --subnet $SUBNET --gateway $GATEWAY $NET >/dev/null
	echo "host $i: $(h "$i" network inspect -f '{{.Name}} driver={{.Driver}} id={{printf "%.12s" .Id}}' $NET)"
done

step "Starting a container on each host"
for i in $(seq 1 $N); do
	h "$i" run -d --name "web$i" --hostname "web$i" --network $NET --dns $GATEWAY vxovl/busybox \
		sh -c "mkdir -p /www && echo hello from web$i on host $i >/www/index.html && httpd -p 80 -h /www && exec sleep 3600" >/dev/null
done
h 1 run -d --name iperf-server --network $NET vxovl/iperf3 iperf3 -s >/dev/null
IP1=$(h 1 inspect -f "{{(index .NetworkSettings.Networks \"$NET\").IPAddress}}" web1)
IPS=$(h 1 inspect -f "{{(index .NetworkSettings.Networks \"$NET\").IPAddress}}" iperf-server)
for i in $(seq 1 $N); do
	echo "web$i on host $i: $(h "$i" inspect -f "{{(index .NetworkSettings.Networks \"$NET\").IPAddress}}" "web$i")"
done

step "Cross-host ping: web2 (host 2) and web3 (host 3) -> web1 (host 1, $IP1)"
for i in 2 3; do
	ok=0
	for _ in $(seq 1 20); do # up to ~20s for the hosts to learn each other
		if h "$i" exec "web$i" ping -c1 -W1 "$IP1" >/dev/null 2>&1; then ok=1 && break; fi
	done
	[ $ok = 1 ] || { echo "web$i cannot reach web1" >&2; exit 1; }
	h "$i" exec "web$i" ping -c3 -i 0.2 "$IP1" | tail -2
done

step "Names across hosts: web2 (host 2) finds web1 and web3 by name through vxovl's name server ($GATEWAY)"
for name in web1 web3.$NET; do
	ok=0
	for _ in $(seq 1 20); do # the name is announced once dockerd has reported it: well under a second
		if out=$(h 2 exec web2 nslookup "$name" 2>&1) && echo "$out" | grep -q '^Address.*10\.210'; then ok=1 && break; fi
		sleep 0.25
	done
	[ $ok = 1 ] || { echo "web2 cannot resolve $name: $out" >&2; exit 1; }
	echo "$out" | grep -A1 "^Name:" | paste - - | sed 's/^/  /'
done
echo "  web2 fetches http://web3/ by name: $(h 2 exec web2 timeout 3 wget -qO- http://web3/)"

step "iperf3: host 2 -> host 1 over the overlay (one TCP stream, 3 s)"
h 2 run --rm --network $NET vxovl/iperf3 iperf3 -c "$IPS" -t 3 -f g | grep -E 'sender|receiver' || true

step "What vxovl programmed on host 1: its overlay namespace, neighbor and FDB tables"
for ovl in $("$LAB" overlays 1); do
	echo "overlay namespace: $ovl"
	echo "-- links"
	nsenter --net="$ovl" ip -br link
	echo "-- permanent neighbors (remote containers' IP -> MAC)"
	nsenter --net="$ovl" ip neigh show nud permanent
	echo "-- VXLAN FDB (remote MAC -> host)"
	nsenter --net="$ovl" bridge fdb show | grep 'dst ' || true
done

step "Done"
