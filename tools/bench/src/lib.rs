//! Benchmarks of the presence service, run by `make bench*` and `scripts/bench.sh`:
//!
//! - `presence-bench` ([`loadgen`]): the load generator, simulated users against running
//!   edges, with observers measuring how fast and how faithfully presence changes arrive;
//! - `presence-bench-aggregator`: the aggregator's fold rate and the replay rate on a
//!   pre-filled stream;
//! - `presence-bench-persister`: the persister's write rate on a burst of changes.
//!
//! They start and read the server processes with the end-to-end harness (`presence-e2e`).
//! [`beats`] is the heartbeat workload the aggregator benchmark shares with the aggregator
//! crate's in-memory `fold` bench.

pub mod beats;
pub mod loadgen;
