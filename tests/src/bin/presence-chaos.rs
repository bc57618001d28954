//! `make chaos`: the chaos suite. Starts a cluster of its own (3 NATS nodes, PostgreSQL,
//! 3 aggregators, 2 persisters, 2 edges behind HAProxy), puts the workload on it, causes one
//! fault after another and prints one table row per fault; with `--write`, puts the table
//! into the given Markdown file between its `chaos-table` markers.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use presence_e2e::chaos::{self, Settings};

/// The chaos suite: every role killed under load, one at a time, and what it cost.
#[derive(Debug, Parser)]
#[command(name = "presence-chaos")]
struct Cli {
    /// Heartbeating Socket.io users.
    #[arg(long, default_value_t = 2000)]
    users: usize,
    /// Active-users customers.
    #[arg(long, default_value_t = 4)]
    customers: usize,
    /// Active-users sessions (one tab each) per customer.
    #[arg(long, default_value_t = 10)]
    sessions: usize,
    /// A fault to cause (repeatable; all of them when none is given): edge, owner, standby,
    /// persister, stream-leader, follower, nats-outage, postgres.
    #[arg(long = "fault")]
    faults: Vec<String>,
    /// Write the table into this Markdown file, between `<!-- chaos-table:begin -->` and
    /// `<!-- chaos-table:end -->`.
    #[arg(long)]
    write: Option<PathBuf>,
}

const BEGIN: &str = "<!-- chaos-table:begin -->";
const END: &str = "<!-- chaos-table:end -->";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let settings = Settings {
        users: cli.users,
        customers: cli.customers,
        sessions: cli.sessions,
        faults: cli.faults.clone(),
    };
    let started = std::time::Instant::now();
    let outcomes = chaos::run(&settings).await?;
    let table = chaos::table(&outcomes);
    println!("{table}");
    eprintln!("chaos: done in {:.0} s", started.elapsed().as_secs_f64());
    if let Some(path) = cli.write {
        let doc = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let (Some(begin), Some(end)) = (doc.find(BEGIN), doc.find(END)) else {
            anyhow::bail!("{} has no {BEGIN} … {END} markers", path.display());
        };
        let when = std::process::Command::new("date")
            .args(["-u", "+%Y-%m-%d"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_default();
        let body = format!(
            "{BEGIN}\nMeasured {when} with {} users and {} active-users sessions, `make chaos` \
             (`presence-chaos --users {} --write docs/reliability.md`):\n\n{table}",
            settings.users,
            settings.customers * settings.sessions,
            settings.users,
        );
        let updated = format!("{}{body}{}", &doc[..begin], &doc[end..]);
        std::fs::write(&path, updated).with_context(|| format!("writing {}", path.display()))?;
        eprintln!("chaos: table written to {}", path.display());
    }
    Ok(())
}
