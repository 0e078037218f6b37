# syntax=docker/dockerfile:1
#
# elevate-sink container image.
#
#   docker build -t elevate-sink:dev .
#
# Two stages: a Debian 12 (bookworm) Rust builder, and a distroless runtime on the
# same Debian release (glibc, libssl3, ca-certificates; no shell, no package manager).
# `.ci/chart-check` checks this file statically (there is no container engine in CI).

############################ build ############################
FROM rust:1.95-bookworm AS build

# Native build dependencies of rdkafka-sys (librdkafka with ssl), openssl-sys and zstd-sys.
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake pkg-config libssl-dev zlib1g-dev \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /src

# Dependency-caching layer: build all dependencies against stub sources, so that a change
# under src/ only recompiles the crate itself. Cargo reads the manifest of every workspace member
# (the test tools beside the product too), and every target declared in a manifest needs a stub
# for cargo to accept it. The members' stubs stay: the image builds the service only.
# `--no-default-features`: without the `demo` feature, so the image carries no Elevate stand-in.
COPY Cargo.toml Cargo.lock ./
COPY crates/standin/Cargo.toml crates/standin/
COPY crates/testkit/Cargo.toml crates/testkit/
COPY harness/Cargo.toml harness/
RUN mkdir -p src crates/standin/src crates/testkit/src harness/src \
 && echo 'fn main() {}' > src/main.rs \
 && : > src/lib.rs \
 && echo 'fn main() {}' > crates/standin/src/main.rs \
 && : > crates/standin/src/lib.rs \
 && : > crates/testkit/src/lib.rs \
 && : > harness/src/lib.rs \
 && cargo build --release --locked --no-default-features --bin elevate-sink \
 && rm -rf src

# The real sources. COPY keeps the files' modification times, which may be older than the
# stubs': touch them so cargo rebuilds the crate instead of reusing the stub build.
COPY src ./src
RUN find src -name '*.rs' -exec touch {} + \
 && cargo build --release --locked --no-default-features --bin elevate-sink \
 && /src/target/release/elevate-sink --help > /dev/null

# zlib is linked dynamically (rdkafka's libz feature against the system zlib); ship the
# builder's copy so the runtime does not depend on the base image carrying it.
RUN mkdir -p "/out/usr/lib/$(gcc -dumpmachine)" \
 && cp -L "/usr/lib/$(gcc -dumpmachine)/libz.so.1" "/out/usr/lib/$(gcc -dumpmachine)/libz.so.1"

############################ runtime ############################
# distroless/cc: glibc, libgcc_s, libssl3/libcrypto3, ca-certificates, tzdata, /etc/passwd
# with the `nonroot` user (65532). No shell.
FROM gcr.io/distroless/cc-debian12:nonroot

COPY --from=build /out/ /
COPY --from=build /src/target/release/elevate-sink /usr/local/bin/elevate-sink

USER 65532:65532
# Admin listener: /healthz, /readyz, /metrics.
EXPOSE 9090
# The service drains in-flight requests, commits and leaves the group on SIGTERM.
STOPSIGNAL SIGTERM

ENTRYPOINT ["/usr/local/bin/elevate-sink"]
CMD ["run", "--config", "/etc/elevate-sink/config.toml"]
