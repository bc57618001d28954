//! The figures as a human table, and as the `--json` file.

use std::fmt::Write;

use super::figures::{CounterFigures, Figures, Stats};

/// `12,345`.
fn group(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn int(n: impl Into<u64>) -> String {
    group(n.into())
}

/// `x` with `digits` decimals (grouped from 10,000 on); `-` when unknown or not finite.
fn num(x: impl Into<Option<f64>>, digits: usize) -> String {
    match x.into().filter(|x| x.is_finite()) {
        Some(x) if x.abs() >= 10_000.0 => group(x.round() as u64),
        Some(x) => format!("{x:.digits$}"),
        None => "-".into(),
    }
}

fn dist(v: &Stats) -> String {
    if v.samples == 0 {
        return "no samples".into();
    }
    format!(
        "p50 {} · p95 {} · p99 {} · max {}  ({} samples)",
        num(v.p50, 2),
        num(v.p95, 2),
        num(v.p99, 2),
        num(v.max, 2),
        int(v.samples as u64)
    )
}

/// The figures as text.
pub(crate) fn table(f: &Figures) -> String {
    let mut s = String::new();
    let r = &f.run;
    let _ = writeln!(
        s,
        "\npresence-bench run {}: {} users x {} connection(s), {} active-users sockets, {} HTTP clients; {} worker process(es); {} of {} observers connected{}",
        r.id,
        int(r.users),
        int(r.connections_per_user),
        int(r.active_users),
        int(r.http_users),
        int(r.worker_processes),
        int(r.observers_connected as u64),
        int(r.observers),
        match r.observers_dropped {
            0 => String::new(),
            n => format!(", {n} of them dropped during the run"),
        },
    );
    let _ = writeln!(
        s,
        "ramp {}/s · heartbeat {} ms · churn {}/s (pause {} ms) · silent {}% · female {}% · server timeout {} ms + sweep {} ms",
        num(r.ramp_per_sec, 0),
        int(r.heartbeat_ms),
        num(r.churn_per_sec, 1),
        int(r.churn_pause_ms),
        num(r.silent_percent, 1),
        num(r.female_percent, 1),
        int(r.timeout_ms),
        int(r.sweep_ms),
    );
    s.push('\n');
    let row = |s: &mut String, label: &str, text: String| {
        let _ = writeln!(s, "{label:<24}{text}");
    };
    let p = &f.phases_s;
    row(
        &mut s,
        "phases (s)",
        format!(
            "ramp {} · hold {} · close {} · drain {} · total {}",
            num(p.ramp, 1),
            num(p.hold, 1),
            num(p.close, 1),
            num(p.drain, 1),
            num(p.total, 1)
        ),
    );
    let c = &f.connections;
    row(
        &mut s,
        "connections",
        format!(
            "attempted {} · held {} · failed {} · dropped {}  (open after ramp {})",
            int(c.attempted),
            int(c.held),
            int(c.failed),
            int(c.dropped),
            int(c.held_after_ramp)
        ),
    );
    for (kind, k) in &c.by_kind {
        if k.attempted == 0 {
            continue;
        }
        row(
            &mut s,
            &format!("  {kind}"),
            format!(
                "attempted {} · ok {} · failed {} · dropped {} · held {}",
                int(k.attempted),
                int(k.ok),
                int(k.failed),
                int(k.dropped),
                int(k.held)
            ),
        );
    }
    for (reason, n) in &c.failure_reasons {
        row(&mut s, "  failure", format!("{} x {reason}", int(*n)));
    }
    row(&mut s, "connect_ms", dist(&f.connect_ms));
    for (stats, label) in [
        (&f.active_ws_setup_ms, "active_ws_setup_ms"),
        (&f.http_join_ms, "http_join_ms"),
    ] {
        if stats.samples > 0 {
            row(&mut s, label, dist(stats));
        }
    }
    row(&mut s, "propagation_ms", dist(&f.propagation_ms));
    row(&mut s, "  connect → online", dist(&f.propagation_online_ms));
    row(&mut s, "  leave → offline", dist(&f.propagation_leave_ms));
    row(&mut s, "silent → offline (ms)", dist(&f.silent_offline_ms));
    row(&mut s, "close → offline (ms)", dist(&f.shutdown_offline_ms));
    let causes: Vec<String> = f
        .expected_by_cause
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(cause, n)| {
            let missed = f
                .missed_by_cause
                .get(cause)
                .map_or_else(|| "-".into(), |m| int(*m));
            format!("{cause} {missed}/{}", int(*n))
        })
        .collect();
    row(
        &mut s,
        "missed_updates",
        format!(
            "{} of {} expected  (by cause: {})",
            int(f.missed_updates),
            int(f.expected_updates),
            causes.join(" · ")
        ),
    );
    row(
        &mut s,
        "ghost_seconds",
        format!(
            "{}  ({} of {} departures shown online past timeout + sweep)",
            num(f.ghost_seconds, 1),
            int(f.ghost_departures),
            int(f.departures)
        ),
    );
    row(
        &mut s,
        "false_offlines",
        format!(
            "{}  (other unexpected updates {} · status/online mismatches {})",
            int(f.false_offlines),
            int(f.unexpected_updates),
            int(f.inconsistent_updates)
        ),
    );
    row(
        &mut s,
        "churn",
        format!(
            "{} users churned ({} picks skipped)",
            int(f.churns),
            int(f.churn_skipped)
        ),
    );
    if f.http_beat_failures > 0 {
        row(&mut s, "http beat failures", int(f.http_beat_failures));
    }

    if !f.processes.is_empty() {
        let _ = writeln!(
            s,
            "\n{:<16}{:>10}{:>12}{:>10}{:>10}{:>12}{:>12}{:>12}",
            "process",
            "rss_mb",
            "after_ramp",
            "end",
            "kb/conn",
            "cpu_s_ramp",
            "cpu_s_hold",
            "cpu%_hold"
        );
        for p in &f.processes {
            let _ = writeln!(
                s,
                "{:<16}{:>10}{:>12}{:>10}{:>10}{:>12}{:>12}{:>12}",
                p.name,
                num(p.rss_mb_start, 1),
                num(p.rss_mb_after_ramp, 1),
                num(p.rss_mb_end, 1),
                num(p.rss_kb_per_connection, 2),
                num(p.cpu_seconds_ramp, 2),
                num(p.cpu_seconds_hold, 2),
                num(p.cpu_percent_hold, 1),
            );
        }
    }
    s.push('\n');
    row(
        &mut s,
        "loadgen_cpu_seconds",
        format!(
            "{} (hold {}) · peak RSS {} MB per worker, {} MB coordinator",
            num(f.loadgen_cpu_seconds, 2),
            num(f.loadgen_cpu_seconds_hold, 2),
            num(f.loadgen_rss_mb_peak.worker_max, 1),
            num(f.loadgen_rss_mb_peak.coordinator, 1)
        ),
    );
    for (name, k) in &f.counters {
        let k = match k {
            CounterFigures::Unreadable { error } => {
                row(
                    &mut s,
                    &format!("counters {name}"),
                    format!("unreadable: {error}"),
                );
                continue;
            }
            CounterFigures::Read(k) => k,
        };
        if [
            k.events_published,
            k.heartbeats_received,
            k.fanout_deliveries,
        ]
        .into_iter()
        .all(|v| v == 0.0 || !v.is_finite())
        {
            // The counters are the edge's; another role (the aggregator) has none of them.
            row(
                &mut s,
                &format!("counters {name}"),
                "none of the edge's counters moved (not an edge?)".to_owned(),
            );
            continue;
        }
        row(
            &mut s,
            &format!("counters {name}"),
            format!(
                "over {} s: JetStream publishes {}/s · heartbeats {}/s · deliveries {}/s · {} deliveries and {} frames per CPU-second",
                num(k.seconds, 1),
                num(k.events_published_per_sec, 2),
                num(k.heartbeats_received_per_sec, 1),
                num(k.fanout_deliveries_per_sec, 0),
                num(k.deliveries_per_cpu_second, 0),
                num(k.frames_per_cpu_second, 0),
            ),
        );
        if k.run_fanout_deliveries.is_some_and(|d| d > 0.0) {
            row(
                &mut s,
                "",
                format!(
                    "whole run: {} deliveries in {} frames · {} deliveries and {} frames per CPU-second",
                    num(k.run_fanout_deliveries, 0),
                    num(k.run_fanout_frames, 0),
                    num(k.run_deliveries_per_cpu_second, 0),
                    num(k.run_frames_per_cpu_second, 0),
                ),
            );
        }
    }
    s
}

/// The figures as the `--json` file: pretty-printed, keys in alphabetical order (as the
/// reports written so far), one newline at the end.
pub(crate) fn json(f: &Figures) -> anyhow::Result<String> {
    // Through a `Value`, whose objects keep their keys sorted.
    let value = serde_json::to_value(f)?;
    Ok(serde_json::to_string_pretty(&value)? + "\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_are_grouped() {
        assert_eq!(group(0), "0");
        assert_eq!(group(999), "999");
        assert_eq!(group(1000), "1,000");
        assert_eq!(group(1234567), "1,234,567");
    }

    #[test]
    fn unknown_numbers_are_dashes() {
        assert_eq!(num(None, 1), "-");
        assert_eq!(num(f64::NAN, 1), "-");
        assert_eq!(num(12.345, 1), "12.3");
        assert_eq!(num(12_345.6, 1), "12,346");
    }
}
