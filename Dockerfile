# syntax=docker/dockerfile:1
# ferroflow: one static binary (server, operator, run, crd) on distroless, with MLflow's web UI.
# The binary is built for musl so ProjectRun's init container can copy it into any user image.

FROM rust:1.95-bookworm AS chef
RUN rustup target add x86_64-unknown-linux-musl \
 && apt-get update \
 && apt-get install -y --no-install-recommends musl-tools=1.2.3-1 \
 && rm -rf /var/lib/apt/lists/* \
 && cargo install cargo-chef --locked --version 0.1.73
WORKDIR /src

FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS builder
COPY --from=planner /src/recipe.json recipe.json
# the [env] of .cargo/config.toml (the bundled SQLite's build flags) applies to the cooked deps too
COPY .cargo .cargo
# Dependencies first: this layer is reused until Cargo.toml/Cargo.lock change.
RUN cargo chef cook --release --locked --target x86_64-unknown-linux-musl --recipe-path recipe.json
COPY . .
RUN cargo build --release --locked --target x86_64-unknown-linux-musl --bin ferroflow \
 && cp target/x86_64-unknown-linux-musl/release/ferroflow /ferroflow

# MLflow's web UI bundle from the pinned mlflow wheel (the script checks the wheel's sha256).
FROM python:3.12-slim-bookworm AS ui
COPY scripts/fetch-ui.sh /fetch-ui.sh
RUN bash /fetch-ui.sh /ui

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=builder /ferroflow /usr/local/bin/ferroflow
COPY --from=ui /ui /usr/share/ferroflow/ui
ENV FERROFLOW_UI_DIR=/usr/share/ferroflow/ui
USER 65532:65532
EXPOSE 5000
ENTRYPOINT ["/usr/local/bin/ferroflow"]
CMD ["server", "--host", "0.0.0.0", "--port", "5000"]
