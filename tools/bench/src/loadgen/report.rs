//! The results as a human table (the JSON is the same figures, see `coordinator`).

use std::fmt::Write;

use serde_json::{Value, json};

use super::coordinator::round;

/// Nearest-rank percentile of sorted `values`.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// `{p50, p95, p99, max, samples}` of `values` (ms, rounded to µs); nulls when empty.
pub(crate) fn stats(mut values: Vec<f64>) -> Value {
    if values.is_empty() {
        return json!({"p50": null, "p95": null, "p99": null, "max": null, "samples": 0});
    }
    values.sort_unstable_by(f64::total_cmp);
    let p = |q: f64| round(percentile(&values, q), 3);
    json!({
        "p50": p(50.0),
        "p95": p(95.0),
        "p99": p(99.0),
        "max": p(100.0),
        "samples": values.len(),
    })
}

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

fn int(v: &Value) -> String {
    v.as_u64().map_or_else(|| "-".into(), group)
}

fn num(v: &Value, digits: usize) -> String {
    match v.as_f64() {
        Some(x) if x.abs() >= 10_000.0 => group(x.round() as u64),
        Some(x) => format!("{x:.digits$}"),
        None => "-".into(),
    }
}

fn dist(v: &Value) -> String {
    if v["samples"].as_u64().unwrap_or(0) == 0 {
        return "no samples".into();
    }
    format!(
        "p50 {} · p95 {} · p99 {} · max {}  ({} samples)",
        num(&v["p50"], 2),
        num(&v["p95"], 2),
        num(&v["p99"], 2),
        num(&v["max"], 2),
        int(&v["samples"])
    )
}

/// The figures as text.
pub(crate) fn table(f: &Value) -> String {
    let mut s = String::new();
    let r = &f["run"];
    let _ = writeln!(
        s,
        "\npresence-bench run {}: {} users x {} connection(s), {} active-users sockets, {} HTTP clients; {} worker process(es); {} of {} observers connected{}",
        r["id"].as_str().unwrap_or_default(),
        int(&r["users"]),
        int(&r["connections_per_user"]),
        int(&r["active_users"]),
        int(&r["http_users"]),
        int(&r["worker_processes"]),
        int(&r["observers_connected"]),
        int(&r["observers"]),
        match r["observers_dropped"].as_u64() {
            Some(n) if n > 0 => format!(", {n} of them dropped during the run"),
            _ => String::new(),
        },
    );
    let _ = writeln!(
        s,
        "ramp {}/s · heartbeat {} ms · churn {}/s (pause {} ms) · silent {}% · female {}% · server timeout {} ms + sweep {} ms",
        num(&r["ramp_per_sec"], 0),
        int(&r["heartbeat_ms"]),
        num(&r["churn_per_sec"], 1),
        int(&r["churn_pause_ms"]),
        num(&r["silent_percent"], 1),
        num(&r["female_percent"], 1),
        int(&r["timeout_ms"]),
        int(&r["sweep_ms"]),
    );
    s.push('\n');
    let row = |s: &mut String, label: &str, text: String| {
        let _ = writeln!(s, "{label:<24}{text}");
    };
    let p = &f["phases_s"];
    row(
        &mut s,
        "phases (s)",
        format!(
            "ramp {} · hold {} · close {} · drain {} · total {}",
            num(&p["ramp"], 1),
            num(&p["hold"], 1),
            num(&p["close"], 1),
            num(&p["drain"], 1),
            num(&p["total"], 1)
        ),
    );
    let c = &f["connections"];
    row(
        &mut s,
        "connections",
        format!(
            "attempted {} · held {} · failed {} · dropped {}  (open after ramp {})",
            int(&c["attempted"]),
            int(&c["held"]),
            int(&c["failed"]),
            int(&c["dropped"]),
            int(&c["held_after_ramp"])
        ),
    );
    if let Some(kinds) = c["by_kind"].as_object() {
        for (kind, k) in kinds {
            if k["attempted"].as_u64().unwrap_or(0) == 0 {
                continue;
            }
            row(
                &mut s,
                &format!("  {kind}"),
                format!(
                    "attempted {} · ok {} · failed {} · dropped {} · held {}",
                    int(&k["attempted"]),
                    int(&k["ok"]),
                    int(&k["failed"]),
                    int(&k["dropped"]),
                    int(&k["held"])
                ),
            );
        }
    }
    if let Some(reasons) = c["failure_reasons"].as_object() {
        for (reason, n) in reasons {
            row(&mut s, "  failure", format!("{} x {reason}", int(n)));
        }
    }
    row(&mut s, "connect_ms", dist(&f["connect_ms"]));
    for (key, label) in [
        ("active_ws_setup_ms", "active_ws_setup_ms"),
        ("http_join_ms", "http_join_ms"),
    ] {
        if f[key]["samples"].as_u64().unwrap_or(0) > 0 {
            row(&mut s, label, dist(&f[key]));
        }
    }
    row(&mut s, "propagation_ms", dist(&f["propagation_ms"]));
    row(
        &mut s,
        "  connect → online",
        dist(&f["propagation_online_ms"]),
    );
    row(
        &mut s,
        "  leave → offline",
        dist(&f["propagation_leave_ms"]),
    );
    row(
        &mut s,
        "silent → offline (ms)",
        dist(&f["silent_offline_ms"]),
    );
    row(
        &mut s,
        "close → offline (ms)",
        dist(&f["shutdown_offline_ms"]),
    );
    let causes: Vec<String> = f["expected_by_cause"]
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(_, n)| n.as_u64().unwrap_or(0) > 0)
        .map(|(cause, n)| {
            format!(
                "{cause} {}/{}",
                int(&f["missed_by_cause"][cause.as_str()]),
                int(n)
            )
        })
        .collect();
    row(
        &mut s,
        "missed_updates",
        format!(
            "{} of {} expected  (by cause: {})",
            int(&f["missed_updates"]),
            int(&f["expected_updates"]),
            causes.join(" · ")
        ),
    );
    row(
        &mut s,
        "ghost_seconds",
        format!(
            "{}  ({} of {} departures shown online past timeout + sweep)",
            num(&f["ghost_seconds"], 1),
            int(&f["ghost_departures"]),
            int(&f["departures"])
        ),
    );
    row(
        &mut s,
        "false_offlines",
        format!(
            "{}  (other unexpected updates {} · status/online mismatches {})",
            int(&f["false_offlines"]),
            int(&f["unexpected_updates"]),
            int(&f["inconsistent_updates"])
        ),
    );
    row(
        &mut s,
        "churn",
        format!(
            "{} users churned ({} picks skipped)",
            int(&f["churns"]),
            int(&f["churn_skipped"])
        ),
    );
    if f["http_beat_failures"].as_u64().unwrap_or(0) > 0 {
        row(&mut s, "http beat failures", int(&f["http_beat_failures"]));
    }

    if let Some(procs) = f["processes"].as_array().filter(|p| !p.is_empty()) {
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
        for p in procs {
            let _ = writeln!(
                s,
                "{:<16}{:>10}{:>12}{:>10}{:>10}{:>12}{:>12}{:>12}",
                p["name"].as_str().unwrap_or_default(),
                num(&p["rss_mb_start"], 1),
                num(&p["rss_mb_after_ramp"], 1),
                num(&p["rss_mb_end"], 1),
                num(&p["rss_kb_per_connection"], 2),
                num(&p["cpu_seconds_ramp"], 2),
                num(&p["cpu_seconds_hold"], 2),
                num(&p["cpu_percent_hold"], 1),
            );
        }
    }
    s.push('\n');
    row(
        &mut s,
        "loadgen_cpu_seconds",
        format!(
            "{} (hold {}) · peak RSS {} MB per worker, {} MB coordinator",
            num(&f["loadgen_cpu_seconds"], 2),
            num(&f["loadgen_cpu_seconds_hold"], 2),
            num(&f["loadgen_rss_mb_peak"]["worker_max"], 1),
            num(&f["loadgen_rss_mb_peak"]["coordinator"], 1)
        ),
    );
    if let Some(counters) = f["counters"].as_object() {
        for (name, k) in counters {
            if let Some(error) = k["error"].as_str() {
                row(
                    &mut s,
                    &format!("counters {name}"),
                    format!("unreadable: {error}"),
                );
                continue;
            }
            let zero = |field: &str| k[field].as_f64().is_none_or(|v| v == 0.0);
            if [
                "events_published",
                "heartbeats_received",
                "fanout_deliveries",
            ]
            .into_iter()
            .all(zero)
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
                    "over {} s: JetStream publishes {}/s · heartbeats {}/s · deliveries {}/s · {} deliveries per CPU-second",
                    num(&k["seconds"], 1),
                    num(&k["events_published_per_sec"], 2),
                    num(&k["heartbeats_received_per_sec"], 1),
                    num(&k["fanout_deliveries_per_sec"], 0),
                    num(&k["deliveries_per_cpu_second"], 0),
                ),
            );
            if k["run_fanout_deliveries"].as_f64().is_some_and(|d| d > 0.0) {
                row(
                    &mut s,
                    "",
                    format!(
                        "whole run: {} deliveries · {} deliveries per CPU-second",
                        num(&k["run_fanout_deliveries"], 0),
                        num(&k["run_deliveries_per_cpu_second"], 0),
                    ),
                );
            }
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v = stats((1..=100).map(f64::from).collect());
        assert_eq!(v["p50"], 50.0);
        assert_eq!(v["p99"], 99.0);
        assert_eq!(v["max"], 100.0);
        assert_eq!(v["samples"], 100);
        assert_eq!(stats(vec![])["samples"], 0);
    }

    #[test]
    fn thousands_are_grouped() {
        assert_eq!(group(0), "0");
        assert_eq!(group(999), "999");
        assert_eq!(group(1000), "1,000");
        assert_eq!(group(1234567), "1,234,567");
    }
}
