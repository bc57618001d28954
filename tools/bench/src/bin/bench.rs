//! `presence-bench`: a load generator for the presence service.
//!
//! It simulates users over Socket.io (and optionally active-users WebSocket and HTTP
//! clients) against one or more edges, spread over several worker processes, while a few
//! observer connections record every `presence-update`. At the end it reports connect
//! times, propagation latency, missed updates, ghost-seconds, false offlines, and the
//! memory and CPU of the server processes it was told about. It measures; it asserts nothing.
//!
//! ```sh
//! presence-bench --edge http://127.0.0.1:3000 --users 10000 --ramp-per-sec 500 \
//!     --hold-secs 60 --churn-per-sec 5 --silent-percent 2 \
//!     --proc edge=$(pgrep -f 'presence edge') --metrics edge=http://127.0.0.1:9100/metrics \
//!     --json result.json
//! ```
//!
//! `presence-bench --help` lists every flag; the design is described in the crate's
//! `loadgen` module (`tools/bench/src/loadgen/mod.rs`).

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    presence_bench::loadgen::main().await
}
