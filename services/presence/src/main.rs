//! `presence`: one binary, every role. `presence standalone` wires all roles in one process
//! around an in-memory event log; `presence edge`, `presence aggregator` and
//! `presence persister` run one role each against NATS JetStream.

mod cli;
mod replay;
mod roles;
mod settings;
mod streams;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = cli::Cli::parse_and_print();
    presence_telemetry::init_tracing();
    cli.run().await
}
