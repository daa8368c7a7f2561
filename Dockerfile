# Builds the rootfs of the vxovl managed plugin. Docker plugins are not images: the image is
# only a way to produce the rootfs, which `docker plugin create` then packages with config.json.
#
#   docker build -t vxovl-rootfs .
#   id=$(docker create vxovl-rootfs)
#   rm -rf build/plugin && mkdir -p build/plugin/rootfs
#   docker export "$id" | tar -x -C build/plugin/rootfs
#   docker rm "$id"
#   cp config.json build/plugin/
#   docker plugin create REGISTRY/vxovl:TAG build/plugin
#   docker plugin push REGISTRY/vxovl:TAG
#   # on every host:
#   mkdir -p /var/lib/vxovl
#   docker plugin install --grant-all-permissions --alias vxovl REGISTRY/vxovl:TAG PEERS=...
#
# Without a registry at hand, `make plugin` builds the same directory with the local Go.

FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags '-s -w' -o /out/usr/bin/vxovl ./plugin && \
    mkdir -p /out/run/docker/plugins /out/run/vxovl /out/run/vxovl-netns /out/var/lib/vxovl /out/etc /out/tmp

FROM scratch
COPY --from=build /out/ /
ENTRYPOINT ["/usr/bin/vxovl"]
