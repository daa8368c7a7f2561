#!/usr/bin/env bash
# A multi-host Docker lab on one machine: one network namespace and one real dockerd per
# simulated host, joined by an underlay bridge that lives in its own namespace so that no lab
# packet can reach the machine's real network.
#
#   lab.sh up N                       start hosts 1..N
#   lab.sh down                       stop and remove everything the lab made (idempotent)
#   lab.sh docker I ARGS...           docker client against host I
#   lab.sh exec I CMD...              run CMD in host I's network namespace (I = wire: in the
#                                     underlay's namespace, which holds LAB_DNS and the registry)
#   lab.sh install-plugin I [K=V...]  create, configure and enable vxovl on host I
#   lab.sh registry                   start a local registry on the underlay ($LAB_REGISTRY)
#   lab.sh overlays I                 list the overlay namespaces vxovl pinned on host I
#   lab.sh stop-host I                stop host I's dockerd (TERM; containers live on with
#                                     --live-restore), keeping its data
#   lab.sh start-host I [FLAGS...]    start host I's dockerd again, with extra dockerd FLAGS
#   lab.sh reboot-host I [FLAGS...]   a host reboot: stop dockerd, kill what is left in the host,
#                                     drop its mounts, exec root and network namespace, recreate
#                                     them and start dockerd (data root and plugin state survive)
#   lab.sh status                     what is running
#   lab.sh compose I ARGS...          the lab's docker-compose against host I (v1 on Docker 20,
#                                     trixie's compose v2 on Docker 26), in the current directory
#   lab.sh fetch-docker26             unpack Debian trixie's docker.io 26.1, containerd,
#                                     docker-compose v2 and tini into LAB_DOCKER26_DIR unless
#                                     there already (make deps runs it); installs nothing
#   lab.sh check-docker V             say what is missing to run Docker V (20 or 26) hosts
#
# Environment:
#   LAB_NAME      prefix of namespaces and the lab dir (default vxlab)
#   LAB_SUBNET    first three octets of the underlay /24 (default 10.98.0: hosts .1 .. .N)
#   LAB_DIR       where hosts keep their data (default /tmp/$LAB_NAME)
#   LAB_REGISTRY  registry address every dockerd trusts without TLS (default $LAB_SUBNET.250:5000;
#                 empty: none)
#   LAB_PLUGIN    plugin name (default vxovl) and LAB_PLUGIN_DIR its directory
#                 (default build/plugin of this repository)
#   LAB_PLUGIN_REF install-plugin pulls this reference (docker plugin install) instead of
#                 creating the plugin from LAB_PLUGIN_DIR
#   LAB_DOCKER    Docker version of the lab's hosts, chosen at up and kept for the lab's life:
#                 20 (the system's docker.io 20.10, default) or 26 (trixie's docker.io 26.1
#                 with compose v2, from LAB_DOCKER26_DIR)
#   LAB_DNS       the lab's upstream DNS server address, on the wire namespace's bridge (default
#                 $LAB_SUBNET.253): every host's private /etc/resolv.conf names only it, so
#                 nothing in the lab asks the machine's resolver; nothing answers there unless a
#                 test serves DNS on it (lab.sh exec wire CMD...)
#   LAB_DOCKER26_DIR where fetch-docker26 unpacks Docker 26 (default /opt/vxovl-lab/trixie: a
#                 machine-wide dependency like docker.io itself, shared by every clone, kept by
#                 make clean)
#   LAB_DEBIAN_MIRROR the Debian mirror fetch-docker26 reads trixie from (default: the one this
#                 machine's apt sources name for bookworm)
set -euo pipefail

LAB_NAME=${LAB_NAME:-vxlab}
LAB_SUBNET=${LAB_SUBNET:-10.98.0}
LAB_SUBNET=${LAB_SUBNET%.0/24} # accept 10.98.0.0/24 too
LAB_DIR=${LAB_DIR:-/tmp/$LAB_NAME}
LAB_REGISTRY=${LAB_REGISTRY-$LAB_SUBNET.250:5000}
LAB_PLUGIN=${LAB_PLUGIN:-vxovl}
REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
LAB_PLUGIN_DIR=${LAB_PLUGIN_DIR:-$REPO_ROOT/build/plugin}
LAB_DOCKER26_DIR=${LAB_DOCKER26_DIR:-/opt/vxovl-lab/trixie}
LAB_DNS=${LAB_DNS:-$LAB_SUBNET.253}
WIRE=$LAB_NAME-wire

case $LAB_DIR in
/ | /tmp | /tmp/ | "") echo "lab.sh: refusing LAB_DIR=$LAB_DIR" >&2 && exit 2 ;;
esac
case $LAB_SUBNET in
192.0.2 | 192.0.2.*) echo "lab.sh: 192.0.2.0/24 is this machine's own network: pick another LAB_SUBNET" >&2 && exit 2 ;;
esac

log() { printf '[lab %s] %s\n' "$LAB_NAME" "$*" >&2; }
note() { printf 'lab.sh: %s\n' "$*" >&2; }
die() { printf 'lab.sh: %s\n' "$*" >&2; exit 1; }

hostdir() { echo "$LAB_DIR/h$1"; }
hostns() { echo "$LAB_NAME-h$1"; }
hostaddr() { echo "$LAB_SUBNET.$1"; }
# A host's API socket sits in a directory of its own, as /run/docker.sock does on a real host:
# the plugin's "docker" mount binds that directory.
sock() { echo "unix://$(hostdir "$1")/run/docker.sock"; }

# Hosts that exist, from their dirs (so down works without knowing N).
hosts() {
	local d
	for d in "$LAB_DIR"/h*; do
		[ -d "$d" ] && echo "${d##*/h}"
	done | sort -n
}

# shellcheck source=wait.sh
. "$REPO_ROOT/examples/lab/wait.sh"

ldocker() {
	local i=$1
	shift
	docker -H "$(sock "$i")" "$@"
}

# ---------------------------------------------------------------------------------------------
# Docker versions: 20 is the system's docker.io; 26 is Debian trixie's, unpacked beside it.

# The packages Docker 26 hosts run from. docker.io 26 has no client (the system's docker CLI
# talks to both); tini-static is its docker-init.
DOCKER26_DEBS="docker.io containerd docker-compose tini"

# debian_mirror: the Debian mirror this machine's apt uses for a plain release suite (not
# -security, not -updates), from deb822 .sources files or one-line sources.list files.
debian_mirror() {
	local f m
	if [ -n "${LAB_DEBIAN_MIRROR:-}" ]; then
		echo "$LAB_DEBIAN_MIRROR"
		return 0
	fi
	# sed -n 1p reads all its input: head would end the loop early with SIGPIPE (and pipefail).
	m=$(for f in /etc/apt/sources.list.d/*.sources; do
		[ -f "$f" ] || continue
		awk 'BEGIN { RS = ""; FS = "\n" }
			{
				types = ""; uris = ""; suites = ""; enabled = "yes"
				for (i = 1; i <= NF; i++) {
					line = $i
					if (line ~ /^#/) continue
					key = tolower(line); sub(/:.*/, "", key)
					sub(/^[^:]*:[ \t]*/, "", line)
					if (key == "types") types = " " line " "
					else if (key == "uris") uris = line
					else if (key == "suites") suites = " " line " "
					else if (key == "enabled") enabled = tolower(line)
				}
				if (enabled != "no" && types ~ / deb / && suites ~ / (bullseye|bookworm|trixie|forky|sid|oldstable|stable|testing|unstable) /) {
					split(uris, u, /[ \t]+/); print u[1]; exit
				}
			}' "$f"
	done | sed -n 1p)
	if [ -z "$m" ]; then
		m=$(for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
			[ -f "$f" ] || continue
			# deb [options] URI SUITE COMPONENT...
			sed -e 's/\[[^]]*\]//' "$f" | awk '$1 == "deb" && $3 ~ /^(bullseye|bookworm|trixie|forky|sid|oldstable|stable|testing|unstable)$/ { print $2 }'
		done | sed -n 1p)
	fi
	[ -n "$m" ] && echo "$m"
}

# docker26_missing: what Docker 26 hosts lack here, one line each (nothing when ready).
docker26_missing() {
	local r=$LAB_DOCKER26_DIR/root f
	if [ ! -d "$r" ]; then
		echo "Docker 26 in $LAB_DOCKER26_DIR (run: make deps, or examples/lab/lab.sh fetch-docker26)"
	else for f in usr/sbin/dockerd usr/bin/containerd usr/bin/containerd-shim-runc-v2 usr/bin/docker-init usr/bin/docker-compose; do
		[ -x "$r/$f" ] || echo "$r/$f (run: make deps, or examples/lab/lab.sh fetch-docker26)"
	done; fi
	# Trixie's runc needs a newer glibc than bookworm's: Docker 26 hosts use the system's.
	command -v runc >/dev/null || echo "runc (apt-get install runc; docker.io brings it)"
}

cmd_check_docker() {
	local v=${1:?check-docker 20|26} missing
	case $v in
	20) missing=$(for b in dockerd containerd runc docker-compose; do command -v "$b" >/dev/null || echo "$b (run: make deps)"; done) ;;
	26) missing=$(docker26_missing) ;;
	*) die "check-docker: Docker $v is not a lab version (20 or 26)" ;;
	esac
	command -v docker >/dev/null || missing="$missing${missing:+
}docker (the client; run: make deps)"
	[ -z "$missing" ] || { printf 'Docker %s hosts cannot run here; missing:\n%s\n' "$v" "$missing" >&2; return 1; }
}

# lab_docker: the Docker version of this lab's hosts: chosen at up (LAB_DOCKER) and kept in the
# lab dir, so later commands (start-host, compose, ...) need not repeat it.
lab_docker() {
	local kept
	kept=$(cat "$LAB_DIR/docker-version" 2>/dev/null || true)
	if [ -n "$kept" ]; then
		[ -z "${LAB_DOCKER:-}" ] || [ "$LAB_DOCKER" = "$kept" ] ||
			die "lab $LAB_NAME runs Docker $kept, not LAB_DOCKER=$LAB_DOCKER (lab.sh down first)"
		echo "$kept"
	else
		echo "${LAB_DOCKER:-20}"
	fi
}

# dockerd_path: PATH for a host's dockerd. Docker 26's dockerd finds its containerd, shims,
# docker-proxy and docker-init (tini-static) there, and the system's runc after them.
dockerd_path() {
	case $(lab_docker) in
	26) echo "$LAB_DOCKER26_DIR/root/usr/sbin:$LAB_DOCKER26_DIR/root/usr/bin:$PATH" ;;
	*) echo "$PATH" ;;
	esac
}

# compose_bin: compose v1 (docker-compose 1.29) with Docker 20, trixie's v2 with Docker 26.
compose_bin() {
	case $(lab_docker) in
	26) echo "$LAB_DOCKER26_DIR/root/usr/bin/docker-compose" ;;
	*) command -v docker-compose || die "docker-compose not found: run make deps" ;;
	esac
}

# fetch-docker26: download trixie's packages with a private apt state (the system's package
# lists, cache and installed set stay untouched) and unpack them into LAB_DOCKER26_DIR. Nothing
# is installed: dpkg -x only. A complete directory is left alone; a partial one is redone.
cmd_fetch_docker26() {
	local dir=$LAB_DOCKER26_DIR tmp mirror keyring="" A f
	if [ -z "$(docker26_missing | grep -v '^runc')" ]; then
		note "Docker 26 already unpacked in $dir"
		return 0
	fi
	mkdir -p "$(dirname "$dir")"
	# Two clones running make deps at once must not unpack into each other.
	exec 9>"$dir.lock"
	flock 9
	if [ -z "$(docker26_missing | grep -v '^runc')" ]; then
		return 0
	fi
	mirror=$(debian_mirror) || die "fetching Docker 26: no Debian mirror in /etc/apt/sources.list{,.d/*} (for bookworm or another Debian release).
Docker 26 lab hosts run Debian trixie's docker.io, containerd, docker-compose and tini unpacked
into $dir: set LAB_DEBIAN_MIRROR to a Debian mirror URL (the one that serves 'trixie main'), or
unpack those packages there by hand (dpkg-deb -x each .deb into $dir/root)."
	command -v apt-get >/dev/null && command -v dpkg-deb >/dev/null || die "fetching Docker 26 needs apt-get and dpkg-deb"
	local start=$SECONDS
	tmp=$(mktemp -d "$dir.new.XXXXXX")
	trap 'rm -rf "$tmp"' EXIT
	mkdir -p "$tmp/apt/etc" "$tmp/apt/state/lists/partial" "$tmp/apt/cache/archives/partial" "$tmp/debs" "$tmp/root"
	# The archive's keyring when the system has it (deb822 sources name it rather than trusting
	# it globally); else apt's trusted keys.
	[ ! -f /usr/share/keyrings/debian-archive-keyring.gpg ] || keyring="[signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] "
	echo "deb $keyring$mirror trixie main" >"$tmp/apt/etc/sources.list"
	A=(-o "Dir::Etc::SourceList=$tmp/apt/etc/sources.list" -o Dir::Etc::SourceParts=/dev/null
		-o "Dir::State=$tmp/apt/state" -o "Dir::Cache=$tmp/apt/cache" -o Dir::State::status=/var/lib/dpkg/status
		-o Acquire::IndexTargets::deb::DEP-11::DefaultEnabled=false -o APT::Sandbox::User=root -q)
	note "fetching Docker 26 ($DOCKER26_DEBS) from $mirror trixie into $dir"
	apt-get "${A[@]}" update >"$tmp/apt.log" 2>&1 || die "apt-get update for trixie failed (log below; NO_PUBKEY: apt-get install debian-archive-keyring)
$(cat "$tmp/apt.log")"
	# shellcheck disable=SC2086 # a list of package names
	(cd "$tmp/debs" && apt-get "${A[@]}" download $DOCKER26_DEBS) >>"$tmp/apt.log" 2>&1 || die "apt-get download from trixie failed (log below)
$(cat "$tmp/apt.log")"
	for f in "$tmp"/debs/*.deb; do dpkg-deb -x "$f" "$tmp/root"; done
	# Trixie's runc and dynamic tini need glibc 2.38: the system's runc runs the containers and
	# tini-static (docker-init) the --init processes.
	rm -f "$tmp/root/usr/sbin/runc" "$tmp/root/usr/bin/runc" "$tmp/root/usr/bin/tini"
	(cd "$tmp/debs" && ls -1 *.deb) >"$tmp/PACKAGES"
	rm -rf "$tmp/apt" "$tmp/debs"
	chmod 0755 "$tmp"
	# Whole or not at all: a partial directory from an interrupted run goes, the new one moves in.
	rm -rf "$dir"
	mv "$tmp" "$dir"
	trap - EXIT
	note "Docker 26 unpacked in $dir ($((SECONDS - start))s): $(tr '\n' ' ' <"$dir/PACKAGES")"
	"$dir/root/usr/sbin/dockerd" --version >&2
	"$dir/root/usr/bin/docker-compose" version >&2
}

# ---------------------------------------------------------------------------------------------
# images

# make_rootfs_busybox DIR: a root filesystem with busybox-static and its applet links.
make_rootfs_busybox() {
	local root=$1 bb=/bin/busybox a
	[ -x "$bb" ] || bb=$(command -v busybox) || die "busybox not found: apt-get install busybox-static"
	file_is_static "$bb" || die "$bb is not static: apt-get install busybox-static"
	mkdir -p "$root"/{bin,sbin,etc,tmp,proc,sys,dev,root}
	cp "$bb" "$root/bin/busybox"
	chroot "$root" /bin/busybox --install -s /bin
	echo 'root:x:0:0:root:/root:/bin/sh' >"$root/etc/passwd"
	echo 'root:x:0:' >"$root/etc/group"
}

file_is_static() { ! ldd "$1" >/dev/null 2>&1; }

# add_iperf3 DIR: iperf3 and the libraries ldd lists for it.
add_iperf3() {
	local root=$1 bin lib
	bin=$(command -v iperf3) || die "iperf3 not found: apt-get install iperf3"
	mkdir -p "$root/usr/bin"
	cp "$bin" "$root/usr/bin/iperf3"
	for lib in $(ldd "$bin" | grep -o '/[^ ]*'); do
		mkdir -p "$root$(dirname "$lib")"
		cp -L "$lib" "$root$lib"
	done
}

build_images() {
	local img=$LAB_DIR/images
	mkdir -p "$img"
	make_rootfs_busybox "$img/busybox"
	cp -a "$img/busybox" "$img/iperf3"
	add_iperf3 "$img/iperf3"
	tar -C "$img/busybox" -cf "$img/busybox.tar" .
	tar -C "$img/iperf3" -cf "$img/iperf3.tar" .
	rm -rf "$img/busybox" "$img/iperf3"
}

import_images() {
	local i=$1 img=$LAB_DIR/images
	ldocker "$i" import -c 'CMD ["/bin/sh"]' "$img/busybox.tar" vxovl/busybox >/dev/null
	ldocker "$i" import -c 'CMD ["/usr/bin/iperf3","-s"]' "$img/iperf3.tar" vxovl/iperf3 >/dev/null
}

# ---------------------------------------------------------------------------------------------
# up

# drop_stale_pidfile FILE: a killed dockerd (or its containerd) leaves its pid file, and until
# it is reaped the zombie's PID looks alive: the next dockerd refuses to start ("pid file
# found") or waits for a containerd that is gone. Drop the file unless that process runs.
drop_stale_pidfile() {
	local state
	[ -f "$1" ] || return 0
	state=$(sed -n 's/^.*) \(.\).*$/\1/p' "/proc/$(cat "$1")/stat" 2>/dev/null || true)
	case $state in "" | Z) rm -f "$1" ;; esac
}

start_dockerd() {
	local i=$1 d ns regflag=""
	shift
	d=$(hostdir "$i")
	ns=$(hostns "$i")
	mkdir -p "$d/data" "$d/exec" "$d/state" "$d/netns" "$d/etc-docker/plugins" "$d/run"
	drop_stale_pidfile "$d/pid"
	drop_stale_pidfile "$d/exec/containerd/containerd.pid"
	# The host's own /run/docker/plugins (plugin sockets, fifos) outlives a dockerd restart, as
	# on a real host: --live-restore reattaches to the running plugin through it.
	mkdir -p -m 0700 "$d/run-plugins"
	# The plugin's propagated mount reaches this host's view only through a shared mount.
	mountpoint -q "$d/data" || mount --bind "$d/data" "$d/data"
	mount --make-shared "$d/data"
	# Sandboxes (network namespaces pinned under exec-root/netns) must outlive dockerd for
	# --live-restore, as /run does on a real host: shared, so the next dockerd sees them.
	mountpoint -q "$d/exec" || mount --bind "$d/exec" "$d/exec"
	mount --make-shared "$d/exec"
	# vxovl pins its overlay namespaces in its netns mount (this host's /run/vxovl): a shared
	# mount, so that the pins live in this host's mount namespace and outlive the plugin's
	# (docker plugin disable, upgrade). The machine's root is private: this is the one-time setup
	# the README asks of such hosts.
	mountpoint -q "$d/netns" || mount --bind "$d/netns" "$d/netns"
	mount --make-shared "$d/netns"
	[ -z "$LAB_REGISTRY" ] || regflag="--insecure-registry $LAB_REGISTRY"
	# The host's resolver is the lab's (LAB_DNS), never the machine's: dockerd hands it to
	# containers' embedded DNS and bind-mounts it into plugins with host networking.
	printf 'nameserver %s\noptions timeout:1 attempts:1\n' "$LAB_DNS" >"$d/resolv.conf"
	# ip netns exec would remount /sys and hide the cgroup mounts dockerd needs: use nsenter for
	# the network and unshare for a private mount (own plugin sockets, own daemon id, own
	# resolv.conf) and UTS.
	nsenter --net="/run/netns/$ns" unshare --mount --uts --propagation unchanged sh -c "
		hostname $ns
		mount --bind $d/run-plugins /run/docker/plugins
		mount --bind $d/etc-docker /etc/docker
		mount --bind $d/resolv.conf /etc/resolv.conf
		PATH=$(dockerd_path) exec setsid dockerd --data-root $d/data --exec-root $d/exec -H $(sock "$i") \
			--pidfile $d/pid --iptables=false --bridge=none $regflag $*" \
		>>"$d/dockerd.log" 2>&1 </dev/null &
}

# add_host_netns I: host I's network namespace, wired to the underlay bridge.
add_host_netns() {
	local i=$1
	ip netns add "$(hostns "$i")"
	ip -n "$WIRE" link add "w-h$i" type veth peer name eth0 netns "$(hostns "$i")"
	ip -n "$WIRE" link set "w-h$i" master ulbr up
	ip -n "$(hostns "$i")" addr add "$(hostaddr "$i")/24" dev eth0
	ip -n "$(hostns "$i")" link set eth0 up
	ip -n "$(hostns "$i")" link set lo up
}

cmd_up() {
	local n=${1:-3} i
	[[ $n =~ ^[0-9]+$ ]] && [ "$n" -ge 1 ] && [ "$n" -le 200 ] || die "up N: N must be 1..200"
	[ ! -e "/run/netns/$WIRE" ] || die "lab $LAB_NAME is already up (lab.sh down first)"
	local v=${LAB_DOCKER:-20}
	cmd_check_docker "$v" || die "lab $LAB_NAME cannot start Docker $v hosts"
	mkdir -p "$LAB_DIR"
	echo "$v" >"$LAB_DIR/docker-version"
	build_images

	ip netns add "$WIRE"
	ip -n "$WIRE" link set lo up
	ip -n "$WIRE" link add ulbr type bridge # not "br": ip parses that as a keyword
	ip -n "$WIRE" link set ulbr up
	# The wire namespace holds .250 for the lab registry and LAB_DNS for a test's DNS server.
	ip -n "$WIRE" addr add "$LAB_SUBNET.250/24" dev ulbr
	ip -n "$WIRE" addr add "$LAB_DNS/24" dev ulbr
	for i in $(seq 1 "$n"); do
		add_host_netns "$i"
		start_dockerd "$i"
	done
	for i in $(seq 1 "$n"); do
		wait_until 30 ldocker "$i" info ||
			die "dockerd of host $i did not answer within 30s: see $(hostdir "$i")/dockerd.log"
	done
	# wait for the imports only: dockerd is a child of this shell too.
	local pids=()
	for i in $(seq 1 "$n"); do
		import_images "$i" &
		pids+=($!)
	done
	for i in "${pids[@]}"; do wait "$i" || die "importing images failed"; done
	log "up: $n Docker $v hosts on $LAB_SUBNET.0/24 (${SECONDS}s); try: $0 docker 1 ps"
}

# ---------------------------------------------------------------------------------------------
# down

# Inodes of the network namespaces this lab created.
lab_netns_inodes() {
	local f
	for f in /run/netns/"$LAB_NAME"-*; do
		[ -e "$f" ] && stat -L -c %i "$f" 2>/dev/null
	done
	true
}

# Processes this lab started: every process inside one of the lab's network namespaces
# (dockerd, containerd, shims, plugins, registry) or whose command line names the lab dir,
# plus all their descendants (containers). Never the caller or its ancestors.
lab_pids() {
	local inodes self p
	inodes=$(lab_netns_inodes | tr '\n' ' ')
	self=" $$ $(ancestors $$) "
	{
		if [ -n "${inodes// /}" ]; then
			# stat fails on a process that exits after the glob: not an error.
			{ stat -L -c '%i %n' /proc/[0-9]*/ns/net 2>/dev/null || true; } |
				awk -v want="$inodes" 'BEGIN { split(want, w, " "); for (k in w) ok[w[k]] = 1 }
					($1 in ok) { split($2, f, "/"); print f[3] }'
		fi
		# grep says 2 when a process exits while it reads: with pipefail that would end down.
		{ grep -lsF "$LAB_DIR/" /proc/[0-9]*/cmdline || true; } | cut -d/ -f3
	} | sort -u | descendants_of | awk -v self="$self" 'index(self, " " $1 " ") == 0' |
		while read -r p; do if [ -d "/proc/$p" ]; then echo "$p"; fi; done # the grep above saw itself
}

ancestors() {
	local p=$1
	while p=$(awk '/^PPid:/{print $2}' "/proc/$p/status" 2>/dev/null) && [ "${p:-0}" -gt 1 ]; do
		echo "$p"
	done | tr '\n' ' '
}

# Reads pids on stdin, prints them and all their descendants.
descendants_of() {
	local roots
	roots=$(tr '\n' ' ')
	[ -n "${roots// /}" ] || return 0
	ps -e -o pid=,ppid= | awk -v roots="$roots" '
		BEGIN { n = split(roots, r, /[ \n]+/); for (i = 1; i <= n; i++) if (r[i] != "") keep[r[i]] = 1 }
		{ parent[$1] = $2 }
		END {
			do { changed = 0
				for (p in parent) if (!(p in keep) && (parent[p] in keep)) { keep[p] = 1; changed = 1 }
			} while (changed)
			for (p in keep) print p
		}'
}

alive() { kill -0 "$1" 2>/dev/null; }

stop_dockerd() {
	local i=$1 d pid
	d=$(hostdir "$i")
	# Graceful first, so plugins see their networks and endpoints go away.
	if [ -S "$d/run/docker.sock" ] && timeout 5 docker -H "$(sock "$i")" info >/dev/null 2>&1; then
		local ids
		ids=$(ldocker "$i" ps -aq 2>/dev/null || true)
		[ -z "$ids" ] || ldocker "$i" rm -f $ids >/dev/null 2>&1 || true
		ids=$(ldocker "$i" network ls -q --filter type=custom 2>/dev/null || true)
		[ -z "$ids" ] || ldocker "$i" network rm $ids >/dev/null 2>&1 || true
		for pid in $(ldocker "$i" plugin ls -q 2>/dev/null || true); do
			ldocker "$i" plugin disable -f "$pid" >/dev/null 2>&1 || true
			ldocker "$i" plugin rm -f "$pid" >/dev/null 2>&1 || true
		done
	fi
	pid=$(cat "$d/pid" 2>/dev/null || true)
	[ -n "$pid" ] && alive "$pid" || return 0
	kill -TERM "$pid" 2>/dev/null || true
	# Docker 26 takes about 12s when a container ignores SIGTERM.
	wait_until 30 sh -c "! kill -0 $pid" || { log "dockerd $pid (host $i) ignored TERM for 30s: KILL"; kill -KILL "$pid" 2>/dev/null || true; }
}

kill_leftovers() {
	local pids
	pids=$(lab_pids | tr '\n' ' ')
	[ -n "${pids// /}" ] || return 0
	log "terminating leftover processes: $pids"
	kill -TERM $pids 2>/dev/null || true
	wait_until 5 sh -c "! kill -0 $pids 2>/dev/null && exit 0; for p in $pids; do kill -0 \$p 2>/dev/null && exit 1; done; exit 0" || {
		kill -KILL $pids 2>/dev/null || true
		wait_until 5 sh -c "for p in $pids; do kill -0 \$p 2>/dev/null && exit 1; done; exit 0" || log "still alive: $pids"
	}
}

# Mount points under the lab dir, deepest first (lazy unmount as a last resort: a busy mount
# must not stop the rest of the teardown).
unmount_all() {
	local m pass
	for pass in 1 2 3; do
		local found=0
		for m in $(awk -v dir="$LAB_DIR" '$5 == dir || index($5, dir "/") == 1 { print $5 }' /proc/self/mountinfo | awk '{ print length, $0 }' | sort -rn | cut -d' ' -f2-); do
			found=1
			umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
		done
		[ $found = 1 ] || return 0
	done
}

stop_registry() {
	local pid
	pid=$(cat "$LAB_DIR/registry/pid" 2>/dev/null || true)
	[ -n "$pid" ] && alive "$pid" || return 0
	kill -TERM "$pid" 2>/dev/null || true
	wait_until 5 sh -c "! kill -0 $pid" || kill -KILL "$pid" 2>/dev/null || true
}

cmd_down() {
	local i ns
	if [ -d "$LAB_DIR" ]; then
		local pids=()
		for i in $(hosts); do
			stop_dockerd "$i" &
			pids+=($!)
		done
		for i in "${pids[@]}"; do wait "$i" || true; done
		stop_registry
	fi
	kill_leftovers
	unmount_all
	for ns in /run/netns/"$LAB_NAME"-*; do
		[ -e "$ns" ] || continue
		ip netns del "${ns##*/}" 2>/dev/null || { umount -l "$ns" 2>/dev/null; rm -f "$ns"; }
	done
	if [ -d "$LAB_DIR" ]; then
		# Anything still mounted here would make rm walk into live data: check first.
		if awk -v dir="$LAB_DIR" '$5 == dir || index($5, dir "/") == 1 { f = 1 } END { exit !f }' /proc/self/mountinfo; then
			die "mounts remain under $LAB_DIR; not removing it"
		fi
		rm -rf --one-file-system "$LAB_DIR"
	fi
	log "down (${SECONDS}s)"
}

# ---------------------------------------------------------------------------------------------
# stop, start, reboot one host

# stop_host I: TERM dockerd and wait (KILL after 30s); unlike down it removes nothing.
cmd_stop_host() {
	local i=${1:?stop-host I} pid
	pid=$(cat "$(hostdir "$i")/pid" 2>/dev/null || true)
	[ -n "$pid" ] && alive "$pid" || return 0
	kill -TERM "$pid"
	wait_until 30 sh -c "! kill -0 $pid" || { log "dockerd $pid (host $i) ignored TERM for 30s: KILL"; kill -KILL "$pid" 2>/dev/null || true; }
}

cmd_start_host() {
	local i=${1:?start-host I [DOCKERD FLAGS...]}
	[ -d "$(hostdir "$i")" ] && [ -e "/run/netns/$(hostns "$i")" ] || die "host $i does not exist"
	start_dockerd "$@"
	wait_until 30 ldocker "$i" info || die "dockerd of host $i did not answer within 30s: see $(hostdir "$i")/dockerd.log"
}

# Processes inside host I's network namespace (shims, containers, plugins) and their children.
host_pids() {
	local ino
	ino=$(stat -L -c %i "/run/netns/$(hostns "$1")" 2>/dev/null) || return 0
	{ stat -L -c '%i %n' /proc/[0-9]*/ns/net 2>/dev/null || true; } | awk -v want="$ino" '$1 == want { split($2, f, "/"); print f[3] }' |
		descendants_of
}

cmd_reboot_host() {
	local i=${1:?reboot-host I [DOCKERD FLAGS...]} d pids m
	d=$(hostdir "$i")
	cmd_stop_host "$i"
	pids=$(host_pids "$i" | tr '\n' ' ')
	if [ -n "${pids// /}" ]; then
		kill -KILL $pids 2>/dev/null || true
		wait_until 5 sh -c "for p in $pids; do kill -0 \$p 2>/dev/null && exit 1; done; exit 0" || log "still alive: $pids"
	fi
	# /run does not survive a reboot: the exec root, the plugin's propagated mounts.
	for m in $(awk -v dir="$d" 'index($5, dir "/") == 1 { print $5 }' /proc/self/mountinfo | awk '{ print length, $0 }' | sort -rn | cut -d' ' -f2-); do
		umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
	done
	rm -rf --one-file-system "$d/exec" "$d/run-plugins" "$d/netns"
	ip netns del "$(hostns "$i")"
	# The namespace's veth goes with it, but asynchronously: do not race its end in the wire.
	ip -n "$WIRE" link del "w-h$i" 2>/dev/null || true
	add_host_netns "$i"
	shift
	cmd_start_host "$i" "$@"
}

# ---------------------------------------------------------------------------------------------
# plugin, registry, status

cmd_install_plugin() {
	local i=${1:?install-plugin I [KEY=VAL...]} d kv has_addr=0
	shift
	d=$(hostdir "$i")
	[ -n "${LAB_PLUGIN_REF:-}" ] || [ -f "$LAB_PLUGIN_DIR/config.json" ] || die "$LAB_PLUGIN_DIR has no config.json: run make plugin"
	for kv in "$@"; do [[ $kv == ADVERTISE_ADDR=* ]] && has_addr=1; done
	[ $has_addr = 1 ] || set -- "ADVERTISE_ADDR=$(hostaddr "$i")" "$@"
	if ldocker "$i" plugin inspect "$LAB_PLUGIN" >/dev/null 2>&1; then
		ldocker "$i" plugin disable -f "$LAB_PLUGIN" >/dev/null 2>&1 || true
		ldocker "$i" plugin rm -f "$LAB_PLUGIN" >/dev/null
	fi
	mkdir -p "$d/state"
	if [ -n "${LAB_PLUGIN_REF:-}" ]; then
		# Disabled first: the default state source (/var/lib/vxovl) is not this host's.
		ldocker "$i" plugin install --disable --grant-all-permissions --alias "$LAB_PLUGIN" "$LAB_PLUGIN_REF" >/dev/null
	else
		ldocker "$i" plugin create "$LAB_PLUGIN" "$LAB_PLUGIN_DIR" >/dev/null
	fi
	# The plugin reaches this host's dockerd through its own socket, not the machine's.
	ldocker "$i" plugin set "$LAB_PLUGIN" "state.source=$d/state" "netns.source=$d/netns" "docker.source=$d/run" "$@"
	ldocker "$i" plugin enable "$LAB_PLUGIN" >/dev/null
}

cmd_registry() {
	local r=$LAB_DIR/registry
	[ -n "$LAB_REGISTRY" ] || die "LAB_REGISTRY is empty"
	[ -e "/run/netns/$WIRE" ] || die "lab $LAB_NAME is not up"
	command -v docker-registry >/dev/null || die "docker-registry not found: apt-get install docker-registry"
	if [ -f "$r/pid" ] && alive "$(cat "$r/pid")"; then return 0; fi
	mkdir -p "$r/data"
	cat >"$r/config.yml" <<-EOF
		version: 0.1
		log:
		  level: warn
		storage:
		  filesystem:
		    rootdirectory: $r/data
		http:
		  addr: $LAB_REGISTRY
	EOF
	nsenter --net="/run/netns/$WIRE" setsid docker-registry serve "$r/config.yml" >"$r/log" 2>&1 </dev/null &
	echo $! >"$r/pid"
	wait_until 15 nsenter --net="/run/netns/$WIRE" bash -c "exec 3<>/dev/tcp/${LAB_REGISTRY%:*}/${LAB_REGISTRY##*:}" ||
		die "registry did not listen on $LAB_REGISTRY: see $r/log"
	log "registry on $LAB_REGISTRY"
}

# The overlay namespaces vxovl pinned in its netns mount (the host's /run/vxovl on a real host).
cmd_overlays() {
	local i=${1:?overlays I}
	ls -1d "$(hostdir "$i")"/netns/vni-* 2>/dev/null || true
}

cmd_status() {
	local i pid
	echo "lab $LAB_NAME: Docker $(lab_docker), dir $LAB_DIR, underlay $LAB_SUBNET.0/24, DNS $LAB_DNS"
	ip netns list | grep "^$LAB_NAME-" || echo "(no namespaces)"
	for i in $(hosts); do
		pid=$(cat "$(hostdir "$i")/pid" 2>/dev/null || true)
		if [ -n "$pid" ] && alive "$pid"; then
			echo "host $i: $(hostaddr "$i") dockerd pid $pid"
			ldocker "$i" plugin ls 2>/dev/null | sed 's/^/    /'
			ldocker "$i" ps --format '    {{.Names}} {{.Image}} {{.Status}}' 2>/dev/null
		else
			echo "host $i: dockerd not running"
		fi
	done
}

cmd=${1:-}
[ $# -eq 0 ] || shift
case $cmd in
up | down | fetch-docker26 | check-docker | pids | "") ;;
*) lab_docker >/dev/null ;; # a LAB_DOCKER that contradicts the running lab ends here
esac
case $cmd in
up) cmd_up "$@" ;;
down) cmd_down ;;
docker)
	i=${1:?docker I ARGS...}
	shift
	exec docker -H "$(sock "$i")" "$@"
	;;
exec)
	i=${1:?exec I CMD...}
	shift
	if [ "$i" = wire ]; then exec nsenter --net="/run/netns/$WIRE" "$@"; fi
	exec nsenter --net="/run/netns/$(hostns "$i")" "$@"
	;;
compose)
	i=${1:?compose I ARGS...}
	shift
	DOCKER_HOST=$(sock "$i") exec "$(compose_bin)" "$@"
	;;
install-plugin) cmd_install_plugin "$@" ;;
registry) cmd_registry ;;
overlays) cmd_overlays "$@" ;;
stop-host) cmd_stop_host "$@" ;;
start-host) cmd_start_host "$@" ;;
reboot-host) cmd_reboot_host "$@" ;;
status) cmd_status ;;
pids) lab_pids ;;
fetch-docker26) cmd_fetch_docker26 ;;
check-docker) cmd_check_docker "$@" ;;
*)
	sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2
	exit 2
	;;
esac
