//! `presence-bench`, the load generator: its flags, coordinator, workers, analysis and report.
//!
//! # Processes
//!
//! One process can hold only so many sockets (its open-files limit), so the load is spread
//! over worker processes: the process started by the user is the *coordinator*; it starts
//! `--processes` copies of itself as `presence-bench worker --index i …` (through `sh -c` to
//! raise the soft open-files limit to the hard one first) and talks to them over their
//! standard streams, one JSON message a line (`protocol`):
//!
//! | coordinator → worker (`protocol::ToWorker`) | worker → coordinator (`protocol::FromWorker`) |
//! | --- | --- |
//! | | `ready` |
//! | `start`: open your connections on the ramp schedule | `progress {attempted, ok}` every second of the ramp |
//! | | `ramped {counts by kind}` once every connection was attempted |
//! | `hold`: start churning | |
//! | `stop`: close everything and report | `result {connection records, counts, setup times, …}` |
//!
//! A line that is not such a message, or a message out of turn, ends the run with an error.
//!
//! Worker `w` of `P` owns users `u` with `u % P == w` (and likewise the active-users and HTTP
//! clients), so the ramp keeps its global order. Observers live in the coordinator.
//!
//! # Time
//!
//! Every action (connect started, connected, left, closed, dropped) and every observed update
//! is stamped with wall-clock microseconds since the epoch, the one clock all processes share.
//! Workers log facts per connection; the coordinator derives users' online and offline
//! transitions from them and matches them with what the observers saw (`analysis`).

mod analysis;
mod cli;
mod common;
mod coordinator;
mod figures;
mod http1;
mod probes;
mod protocol;
mod report;
mod worker;

use clap::Parser;

/// Entry point: coordinator unless started as a worker.
pub async fn main() -> anyhow::Result<()> {
    let cli = cli::Cli::parse();
    match cli.command {
        Some(cli::Command::Worker(args)) => worker::run(args).await,
        None => coordinator::run(cli.run).await,
    }
}
