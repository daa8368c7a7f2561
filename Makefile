# vxovl: build, package and test the Docker network plugin.
# Every target works as root on a fresh Debian/Ubuntu machine; `make deps` installs what is missing.

export PATH := /usr/local/go/bin:$(PATH)
export CGO_ENABLED ?= 0

GO          ?= go
PLUGIN_NAME ?= vxovl
PLUGIN_DIR  := build/plugin
ROOTFS      := $(PLUGIN_DIR)/rootfs
N           ?= 3
E2E_TIMEOUT ?= 25m
# The build's version, shown by vxovl_build_info: `git describe`, or "dev" outside a git checkout.
VERSION     ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS     := -X main.version=$(VERSION)

# Debian/Ubuntu packages the lab, demo and e2e tests run on. prometheus (with promtool) and
# chromium are the observability test's real scraper, metrics checker and headless browser.
DEPS := docker.io iproute2 util-linux kmod busybox-static iperf3 docker-registry docker-compose \
	prometheus chromium iptables

.PHONY: all build plugin deps test unit e2e vet demo lab-up lab-down clean bench bench-dns bench-run-latency bench-rss bench-sim

all: build

build:
	$(GO) build ./...
	$(GO) build -ldflags '$(LDFLAGS)' -o build/vxovl ./plugin

# The managed plugin's directory, ready for `docker plugin create $(PLUGIN_NAME) $(PLUGIN_DIR)`.
plugin:
	rm -rf $(PLUGIN_DIR)
	mkdir -p $(ROOTFS)/usr/bin $(ROOTFS)/run/docker/plugins $(ROOTFS)/run/vxovl $(ROOTFS)/run/vxovl-netns \
		$(ROOTFS)/var/lib/vxovl $(ROOTFS)/proc $(ROOTFS)/sys $(ROOTFS)/dev $(ROOTFS)/etc $(ROOTFS)/tmp
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '-s -w $(LDFLAGS)' -o $(ROOTFS)/usr/bin/vxovl ./plugin
	cp config.json $(PLUGIN_DIR)/config.json

# Installs only the packages that are missing (apt-get update first, and only then). A dockerd,
# docker-compose or chromium from elsewhere (docker-ce, compose v2 wrapper) counts as present.
# policy-rc.d keeps the freshly installed docker.io and prometheus from starting a system
# dockerd or a Prometheus server on :9090 (the tests run their own, inside the lab); a prometheus
# installed here is also disabled at boot (update-rc.d: init links and systemd unit), and
# --no-install-recommends keeps prometheus-node-exporter, another service, out.
deps:
	@missing=""; \
	for p in $(DEPS); do \
		case $$p in docker.io) have=dockerd;; docker-compose) have=docker-compose;; chromium) have=chromium;; *) have=;; esac; \
		if [ -n "$$have" ] && command -v $$have >/dev/null; then continue; fi; \
		dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q '^install ok installed' || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		nopolicy=; if [ ! -e /usr/sbin/policy-rc.d ]; then nopolicy=1; printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; fi; \
		DEBIAN_FRONTEND=noninteractive apt-get update -q && \
		DEBIAN_FRONTEND=noninteractive NEEDRESTART_SUSPEND=1 apt-get install -y -q --no-install-recommends $$missing; rc=$$?; \
		case " $$missing " in *" prometheus "*) [ $$rc -ne 0 ] || \
			update-rc.d prometheus disable >/dev/null 2>&1;; esac; \
		[ -z "$$nopolicy" ] || rm -f /usr/sbin/policy-rc.d; \
		exit $$rc; \
	fi
	@# Docker 26 for the e2e tests' second Docker version: Debian trixie's docker.io, containerd,
	@# docker-compose v2 and tini unpacked side by side (never installed over the system's), in
	@# /opt/vxovl-lab/trixie (LAB_DOCKER26_DIR), which `make clean` keeps like any installed package.
	@examples/lab/lab.sh fetch-docker26
	@command -v $(GO) >/dev/null || { echo "Go not found: install it under /usr/local/go" >&2; exit 1; }
	@modprobe -q vxlan 2>/dev/null || true
	@modprobe -q bridge 2>/dev/null || true
	@modprobe -q veth 2>/dev/null || true

vet:
	$(GO) vet ./...

unit:
	$(GO) test -count=1 ./...

# The lab end-to-end tests: real dockerds in network namespaces (root only).
e2e:
	VXOVL_E2E=1 $(GO) test -count=1 -v -timeout $(E2E_TIMEOUT) ./tests/e2e/

test: deps plugin unit e2e

demo: deps plugin
	examples/demo.sh

# Throughput, convergence, docker run and restart figures of vxovl next to the underlay and
# Docker's native overlay (swarm mode) in a 2-host lab, then the name service's (bench-dns: how
# soon a container's name resolves on another host, and stops resolving after its removal);
# a few minutes, not part of `test`.
bench: deps plugin
	examples/bench.sh
	examples/bench-dns.sh

bench-dns: deps plugin
	examples/bench-dns.sh

# docker run latency on a lab host with 50 networks and 1,000 remote endpoints, with reconcile
# passes every second, none, and back to back (issue 9); minutes, not part of `test`. To compare
# builds, make plugin in each tree and name them: VXOVL_RUNLAT_PLUGINS=old=/path/to/old,main=.
# (see TestRunLatency).
bench-run-latency: deps plugin
	VXOVL_E2E=1 VXOVL_BENCH=1 $(GO) test -count=1 -v -timeout 60m -run '^TestRunLatency$$' ./tests/e2e/

# The plugin's resident memory and Go heap on a lab host with 20 networks, without remote
# endpoints and with 10,000 of them programmed (from a fake gossip member; issue 13); under a
# minute, not part of `test` (see TestPluginRSS).
bench-rss: deps plugin
	VXOVL_E2E=1 VXOVL_BENCH=1 $(GO) test -count=1 -v -timeout 30m -run '^TestPluginRSS$$' ./tests/e2e/

# 100 and 250 real cluster nodes in one process on an in-memory network (internal/memnet):
# propagation, messages per change, failure detection, a joiner's catch-up, loss, idle CPU
# (about 3 minutes). SIM_NODES=1000 needs more than two cores and about 16 GiB.
SIM_NODES ?= 100|250
bench-sim:
	VXOVL_SIM_MAX_HEAP_GB=16 $(GO) test -count=1 -v -timeout 90m -run XXX -bench 'Simulation/nodes=($(SIM_NODES))$$' -benchtime 1x ./cluster/

lab-up: deps plugin
	examples/lab/lab.sh up $(N)

lab-down:
	examples/lab/lab.sh down

clean:
	-examples/lab/lab.sh down
	rm -rf build
