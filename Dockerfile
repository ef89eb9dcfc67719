# The wangban image: one binary, any subset of workers, configured only by environment.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin wangban

FROM debian:bookworm-slim
RUN useradd --system --uid 10001 --home-dir /var/lib/wangban --create-home wangban
COPY --from=build /src/target/release/wangban /usr/local/bin/wangban
USER 10001:10001
WORKDIR /var/lib/wangban
ENTRYPOINT ["/usr/local/bin/wangban"]
CMD ["serve"]
