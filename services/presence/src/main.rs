//! `presence`: one binary, every role. `presence standalone` wires all roles in one process
//! around an in-memory event log; `presence edge` and `presence aggregator` run one role
//! each against NATS JetStream.

mod cli;
mod replay;
mod streams;

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = cli::Cli::parse();
    presence_telemetry::init_tracing();
    cli.run().await
}
