# syntax=docker/dockerfile:1
# quorate in a container: built with the Rust toolchain image, run on Debian slim as a
# non-root user. docker-compose.yml runs it with PostgreSQL and deploy/docker/quorate.toml;
# alone, with no config, it runs quorate's default (one Nix cache in front of cache.nixos.org,
# SQLite in the volume):
#   docker build -t quorate . && docker run -p 8080:8080 -v quorate-state:/var/lib/quorate quorate

FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
# The registry and target caches survive between builds (BuildKit); the binary is copied out
# of the cache mount so that the next stage can see it.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --package quorate \
    && install -D -m 0755 target/release/quorate /out/quorate

FROM debian:bookworm-slim
# No CA bundle needed: quorate's HTTPS client carries its own roots (rustls, webpki-roots).
RUN useradd --system --uid 10001 --user-group --home-dir /var/lib/quorate \
        --shell /usr/sbin/nologin quorate \
    && install -d -m 0700 -o quorate -g quorate /var/lib/quorate
COPY --from=build /out/quorate /usr/local/bin/quorate
COPY deploy/docker/readyz.sh /usr/local/bin/quorate-readyz
USER quorate
WORKDIR /var/lib/quorate
# A new named volume here starts with the image's ownership (quorate, 0700).
VOLUME /var/lib/quorate
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s --retries=5 \
    CMD ["quorate-readyz", "127.0.0.1:8080"]
ENTRYPOINT ["quorate"]
CMD ["serve", "--listen", "0.0.0.0:8080"]
