# rackboot: a multi-stage build to a slim Debian image with Debian's iPXE binaries.
#
# Run with host networking (DHCP needs the real link) and these capabilities:
#   NET_BIND_SERVICE  ports 67 (DHCP) and 69 (TFTP)
#   NET_RAW           SO_BINDTODEVICE: answer DHCP only on the named interface
#   NET_ADMIN         ARP entries for unicast replies to clients without an address
#
#   docker run --network host \
#     --cap-add NET_BIND_SERVICE --cap-add NET_RAW --cap-add NET_ADMIN \
#     -v /etc/rackboot:/etc/rackboot:ro -v /var/lib/rackboot:/var/lib/rackboot \
#     rackboot
#
# The steps mirror the tested install: `cargo build --release --locked`, Debian's
# `ipxe` package for /usr/lib/ipxe, `ipmitool` for IPMI power control, a config
# file naming the interface.

FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY templates ./templates
COPY static ./static
COPY ipxe ./ipxe
COPY rackboot.example.toml ./
RUN cargo build --release --locked

FROM debian:bookworm-slim
# Versions are not pinned: Debian stable's point releases replace them, and a pinned
# version disappears from the archive.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ipxe ipmitool ca-certificates \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/rackboot /usr/local/bin/rackboot
COPY rackboot.example.toml /etc/rackboot/rackboot.example.toml
VOLUME ["/var/lib/rackboot"]
EXPOSE 67/udp 69/udp 8080/tcp
ENTRYPOINT ["/usr/local/bin/rackboot", "--config", "/etc/rackboot/rackboot.toml"]
CMD ["serve"]
