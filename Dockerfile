# CoreDNS with the healthdns plugin: a static binary in a distroless image, run as nonroot.
#
#   docker build --build-arg VERSION=v0.2.0 -t healthdns:v0.2.0 .
#   docker run -d -p 53:53/udp -p 53:53/tcp -p 9153:9153 \
#       -v "$PWD/Corefile:/etc/coredns/Corefile:ro" healthdns:v0.2.0
ARG GO_IMAGE=golang:1.25-bookworm
ARG BASE_IMAGE=gcr.io/distroless/static-debian12:nonroot

FROM ${GO_IMAGE} AS build
ARG VERSION=dev
RUN apt-get update && apt-get install -y --no-install-recommends libcap2-bin \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
# As CoreDNS's own image does, the binary carries CAP_NET_BIND_SERVICE so that nonroot can bind
# port 53 (Docker and the k3s manifest also lower ip_unprivileged_port_start). ICMP checks use
# ping sockets, which Docker allows by default; CAP_NET_RAW is left out of the file so that the
# binary still starts under runtimes that drop it (podman).
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" \
        -o /out/coredns ./build \
    && setcap cap_net_bind_service=+ep /out/coredns

FROM ${BASE_IMAGE}
COPY --from=build /out/coredns /usr/local/bin/coredns
COPY deploy/Corefile /etc/coredns/Corefile
USER nonroot:nonroot
EXPOSE 53/udp 53/tcp 9153/tcp
ENTRYPOINT ["/usr/local/bin/coredns"]
CMD ["-conf", "/etc/coredns/Corefile"]
