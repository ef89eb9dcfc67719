# The wangban image: one binary, any subset of workers, configured only by environment.
#   docker build .                      builds the binary in a Rust image (profile dist: fat LTO,
#                                       ~30 min on 2 cores), runs it on BASE
#   docker build --target prebuilt .    packs target/release/wangban built beside it (same glibc:
#                                       Debian 12), as the test command does (scripts/compose-test.sh);
#                                       --build-arg BIN=target/dist/wangban packs the dist build
# BASE defaults to Debian's slim image; without a registry, pass one made from Debian's packages
# (`--build-arg BASE=wangban-base:bookworm`, docs/deploy.md).
ARG BASE=debian:bookworm-slim
ARG RUST_IMAGE=rust:1-bookworm

FROM ${BASE} AS runtime
# /var/lib/wangban/materials: the uploads' directory when WANGBAN_MATERIALS_DIR names it (a volume
# mounted there starts owned by the wangban user)
RUN useradd --system --uid 10001 --home-dir /var/lib/wangban --create-home wangban \
    && install -d -o wangban -g wangban /var/lib/wangban/materials
WORKDIR /var/lib/wangban
ENTRYPOINT ["/usr/local/bin/wangban"]
CMD ["serve"]

FROM runtime AS prebuilt
ARG BIN=target/release/wangban
COPY ${BIN} /usr/local/bin/wangban
USER 10001:10001

FROM ${RUST_IMAGE} AS build
WORKDIR /src
COPY . .
RUN cargo build --profile dist --locked --bin wangban

FROM runtime
COPY --from=build /src/target/dist/wangban /usr/local/bin/wangban
USER 10001:10001
