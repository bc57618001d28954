//! `presence replay`: operator tools over the event stream. Reads a range of the log (by
//! sequence, optionally narrowed by event time), folds it with the aggregator's own pure
//! state machines, and
//! - `rebuild`: writes the presence projection in PostgreSQL from it (`--dry-run` shows what
//!   would change);
//! - `timeline`: prints one user's events and the changes they caused, in order;
//! - `metrics`: prints a customer's count and EMA at every metrics tick.
//!
//! Folding is deterministic (sweeps and metrics ticks are events too), so a replay computes
//! what the live system computed. Each partition is folded on its own, as the live cluster
//! does; `--partition` replays one.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use presence_config::{DbArgs, LogArgs};
use presence_events::{
    Event, EventBody, Millis, Partition, Partitions, PresenceChange, Subjects, TenantId, UserId,
    UserKey, format_rfc3339,
};
use presence_fold::Fold;
use presence_log::{EventLog, JetStreamLog, StartAt};
use presence_store::Store;

/// Which part of the log to replay.
#[derive(Debug, Args)]
pub(crate) struct Range {
    /// First event-log sequence (1: the oldest kept). Folding from later than 1 starts from
    /// an empty state.
    #[arg(long, default_value_t = 1)]
    from_seq: u64,
    /// Last sequence (default: the newest when the replay starts).
    #[arg(long)]
    to_seq: Option<u64>,
    /// Only report from this event time on (RFC 3339 or ms since the epoch).
    #[arg(long, value_parser = parse_time)]
    since: Option<Millis>,
    /// Only report up to this event time.
    #[arg(long, value_parser = parse_time)]
    until: Option<Millis>,
    /// Only this customer / tenant.
    #[arg(long)]
    tenant: Option<String>,
    /// Only this partition of the log (default: all of them).
    #[arg(long)]
    partition: Option<u16>,
}

/// What to do with the replayed range.
#[derive(Debug, Subcommand)]
pub(crate) enum Replay {
    /// Rebuild the presence projection in PostgreSQL from the stream.
    Rebuild {
        /// Only this user.
        #[arg(long)]
        user: Option<String>,
        /// Show what would change, write nothing.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        db: DbArgs,
    },
    /// Print one user's events and the presence changes they caused.
    Timeline {
        /// The user.
        #[arg(long)]
        user: String,
    },
    /// Print a customer's active-user count and EMA at every metrics tick.
    Metrics {
        /// The customer.
        #[arg(long)]
        customer: String,
    },
}

fn parse_time(raw: &str) -> Result<Millis, String> {
    if let Ok(ms) = raw.parse::<u64>() {
        return Ok(Millis(ms));
    }
    let t = time::OffsetDateTime::parse(raw, &time::format_description::well_known::Rfc3339)
        .map_err(|e| format!("expected RFC 3339 or ms since the epoch: {e}"))?;
    Ok(Millis(
        u64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(0),
    ))
}

/// Runs a replay command.
pub(crate) async fn run(
    log_args: &LogArgs,
    fold_settings: &presence_aggregator::AggregatorConfig,
    range: Range,
    command: Replay,
) -> anyhow::Result<()> {
    let tenant = range
        .tenant
        .as_deref()
        .map(TenantId::parse)
        .transpose()
        .context("--tenant")?;
    let log = JetStreamLog::connect(&log_args.nats_url, "presence-replay")
        .await
        .context("connecting to NATS (set NATS_URL)")?;
    let subjects = Subjects::new(&log_args.namespace);
    let count = crate::streams::recorded_partitions(
        &log,
        &subjects,
        None,
        log_args.stream_replicas as usize,
    )
    .await?;
    let partitions = Partitions::new(count).context("the recorded number of partitions")?;
    let subjects = subjects.with_partitions(partitions);
    if let Some(p) = range.partition
        && p >= partitions.count()
    {
        bail!(
            "--partition {p}: the log has partitions 0 to {}",
            partitions.count() - 1
        );
    }
    let filter = range
        .partition
        .map(|p| subjects.partition_events(Partition(p)));
    let stream = subjects.events_stream();
    let newest = log
        .last_sequence(&stream)
        .await
        .context("reading the event stream")?;
    let to = range.to_seq.unwrap_or(newest).min(newest);
    if to < range.from_seq {
        bail!(
            "nothing to replay: the stream ends at {newest}, the range starts at {}",
            range.from_seq
        );
    }
    let settings = fold_settings.fold_settings();
    let fresh = || Fold::new(&settings);
    let mut folds: HashMap<Partition, Fold> = HashMap::new();
    let in_window =
        |at: Millis| range.since.is_none_or(|s| at >= s) && range.until.is_none_or(|u| at <= u);
    let in_tenant = |t: &TenantId| tenant.as_ref().is_none_or(|want| want == t);

    let progress = ProgressBar::new(to - range.from_seq + 1);
    progress.set_style(
        ProgressStyle::with_template("{spinner} {pos}/{len} events {per_sec} eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut latest: HashMap<UserKey, PresenceChange> = HashMap::new();
    let mut deliveries = log
        .subscribe(
            &stream,
            filter.as_deref(),
            StartAt::Sequence(range.from_seq),
        )
        .await
        .context("reading the event stream")?;
    while let Some(delivered) = tokio::time::timeout(Duration::from_secs(10), deliveries.next())
        .await
        .context("the event stream stopped delivering")?
    {
        let delivered = delivered?;
        if delivered.seq > to {
            break;
        }
        progress.set_position(delivered.seq - range.from_seq + 1);
        let Some(partition) = subjects.partition_of_event_subject(&delivered.subject) else {
            continue;
        };
        let fold = folds.entry(partition).or_insert_with(fresh);
        let (event, written) = match Event::decode(&delivered.payload) {
            Ok(e) if presence_fold::is_fenced(&mut fold.epoch, &e) => continue,
            // Folded on the log's clock, exactly as the live aggregator folds it; the writer's
            // own time is kept for the timeline.
            Ok(e) => {
                let written = e.at;
                let stored = fold.presence.log_time(Millis(delivered.stored_ms));
                (presence_fold::in_log_time(e, stored), written)
            }
            Err(e) => {
                progress.suspend(|| {
                    eprintln!("seq {}: skipping an undecodable event: {e}", delivered.seq)
                });
                continue;
            }
        };
        let changes = fold.presence.apply(delivered.seq, &event);
        let metrics = fold.active.apply(delivered.seq, &event);
        match &command {
            Replay::Rebuild { .. } => {
                for change in changes {
                    let key = UserKey {
                        tenant: change.tenant.clone(),
                        user: change.user.clone(),
                    };
                    latest.insert(key, change);
                }
            }
            Replay::Timeline { user } => {
                if !in_window(event.at) {
                    continue;
                }
                if touches(&event.body, user, tenant.as_ref()) {
                    progress.suspend(|| {
                        println!("{}", describe_event(delivered.seq, &event, written, user))
                    });
                }
                for c in changes
                    .iter()
                    .filter(|c| c.user.as_str() == user && in_tenant(&c.tenant))
                {
                    progress.suspend(|| {
                        println!(
                            "{}  seq {:>8}  change  {} -> {} (online: {}, cause: {}{})",
                            format_rfc3339(c.at),
                            c.seq,
                            c.user,
                            c.status,
                            c.online,
                            c.cause.as_str(),
                            c.last_seen
                                .map(|t| format!(", lastSeen {}", format_rfc3339(t)))
                                .unwrap_or_default()
                        )
                    });
                }
            }
            Replay::Metrics { customer } => {
                for m in metrics
                    .iter()
                    .filter(|m| m.tenant.as_str() == customer && in_window(m.at))
                {
                    progress.suspend(|| {
                        println!(
                            "{}  seq {:>8}  count {:>6}  ema {:>10.4}",
                            format_rfc3339(m.at),
                            m.seq,
                            m.count,
                            m.ema
                        )
                    });
                }
            }
        }
        // The end of the range, or of what the (filtered) subscription has to give.
        if delivered.seq >= to || delivered.pending == 0 {
            break;
        }
    }
    progress.finish_and_clear();
    eprintln!("replayed sequences {}..={to}", range.from_seq);

    if let Replay::Rebuild { user, dry_run, db } = command {
        let user = user.map(UserId::parse).transpose().context("--user")?;
        let rows: Vec<PresenceChange> = latest
            .into_values()
            .filter(|c| in_tenant(&c.tenant) && user.as_ref().is_none_or(|u| &c.user == u))
            .collect();
        let url = db.database_url.context("rebuild needs DATABASE_URL")?;
        let store = Store::connect(url.expose())
            .await
            .context("connecting to PostgreSQL")?;
        rebuild(&store, rows, dry_run).await?;
    }
    Ok(())
}

/// Whether an event concerns `user` (of `tenant`, if given).
fn touches(body: &EventBody, user: &str, tenant: Option<&TenantId>) -> bool {
    let is = |t: &TenantId, u: &UserId| u.as_str() == user && tenant.is_none_or(|want| want == t);
    match body {
        EventBody::Join { tenant, user, .. }
        | EventBody::Leave { tenant, user, .. }
        | EventBody::Status { tenant, user, .. }
        | EventBody::ServiceStatus { tenant, user, .. } => is(tenant, user),
        EventBody::Beat { beats } => beats.iter().any(|b| is(&b.tenant, &b.user)),
        _ => false,
    }
}

/// One event of a timeline, at the log's time; the writer's own time too when its clock was
/// more than a second off.
fn describe_event(seq: u64, event: &Event, written: Millis, user: &str) -> String {
    let detail = match &event.body {
        EventBody::Join { conn, class, .. } => format!("join    conn {conn} class {class}"),
        EventBody::Leave { conn, reason, .. } => format!("leave   conn {conn} reason {reason:?}"),
        EventBody::Status {
            conn,
            status,
            details,
            ..
        } => format!(
            "status  conn {conn} {status:?}{}",
            details
                .as_ref()
                .map(|d| format!(" {}", serde_json::to_string(d).unwrap_or_default()))
                .unwrap_or_default()
        ),
        EventBody::ServiceStatus { status, .. } => format!("status  (service) {status:?}"),
        EventBody::Beat { beats } => {
            let conns: Vec<String> = beats
                .iter()
                .filter(|b| b.user.as_str() == user)
                .map(|b| b.conn.to_string())
                .collect();
            format!("beat    conn {}", conns.join(","))
        }
        other => other.kind().to_owned(),
    };
    let writer_clock = if written.0.abs_diff(event.at.0) > 1_000 {
        format!(", its clock {}", format_rfc3339(written))
    } else {
        String::new()
    };
    format!(
        "{}  seq {seq:>8}  event   {detail}  (node {}{writer_clock})",
        format_rfc3339(event.at),
        event.node
    )
}

async fn rebuild(store: &Store, rows: Vec<PresenceChange>, dry_run: bool) -> anyhow::Result<()> {
    let mut by_tenant: HashMap<TenantId, Vec<PresenceChange>> = HashMap::new();
    for row in rows {
        by_tenant.entry(row.tenant.clone()).or_default().push(row);
    }
    let (mut differ, mut total) = (0usize, 0usize);
    for (tenant, rows) in &by_tenant {
        let users: Vec<UserId> = rows.iter().map(|r| r.user.clone()).collect();
        let stored: HashMap<UserId, presence_store::PresenceRow> = store
            .rows_of(tenant, &users)
            .await?
            .into_iter()
            .map(|r| (r.user.clone(), r))
            .collect();
        for r in rows {
            total += 1;
            let same = stored.get(&r.user).is_some_and(|s| {
                s.online == r.online && s.status == r.status.as_str() && s.last_seen == r.last_seen
            });
            if !same {
                differ += 1;
                if dry_run && differ <= 50 {
                    let now = stored
                        .get(&r.user)
                        .map(|s| format!("{} (online: {})", s.status, s.online))
                        .unwrap_or_else(|| "no row".into());
                    println!(
                        "{tenant}/{}: {now} -> {} (online: {})",
                        r.user, r.status, r.online
                    );
                }
            }
        }
    }
    if dry_run {
        println!("dry run: {differ} of {total} rows would change");
        return Ok(());
    }
    for rows in by_tenant.values() {
        for chunk in rows.chunks(5_000) {
            store.write_presence(chunk, None).await?;
        }
    }
    println!("rebuilt {total} rows ({differ} differed)");
    Ok(())
}
