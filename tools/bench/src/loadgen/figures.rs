//! The figures of a run, as the report prints them and the `--json` file holds them, and
//! how they are computed from the workers' results and the readings of the servers.

use std::collections::BTreeMap;

use serde::Serialize;

use super::analysis;
use super::cli::Named;
use super::common::{KINDS, PerKind};
use super::probes::{self, ProcSample, Reading, Readings};
use super::protocol::WorkerResult;

/// Everything a run measured (see `presence-bench --help` for what each figure means).
#[derive(Debug, Serialize)]
pub(crate) struct Figures {
    pub(crate) run: RunFigures,
    pub(crate) phases_s: Phases,
    pub(crate) connections: Connections,
    pub(crate) connect_ms: Stats,
    pub(crate) active_ws_setup_ms: Stats,
    pub(crate) http_join_ms: Stats,
    pub(crate) propagation_ms: Stats,
    pub(crate) propagation_online_ms: Stats,
    pub(crate) propagation_leave_ms: Stats,
    pub(crate) silent_offline_ms: Stats,
    pub(crate) shutdown_offline_ms: Stats,
    pub(crate) expected_updates: u64,
    pub(crate) missed_updates: u64,
    pub(crate) missed_by_cause: BTreeMap<String, u64>,
    pub(crate) expected_by_cause: BTreeMap<String, u64>,
    pub(crate) ghost_seconds: f64,
    pub(crate) ghost_departures: u64,
    pub(crate) departures: u64,
    pub(crate) false_offlines: u64,
    pub(crate) unexpected_updates: u64,
    pub(crate) inconsistent_updates: u64,
    pub(crate) churns: u64,
    pub(crate) churn_skipped: u64,
    pub(crate) http_beat_failures: u64,
    pub(crate) processes: Vec<ProcessFigures>,
    pub(crate) loadgen_cpu_seconds: f64,
    pub(crate) loadgen_cpu_seconds_hold: f64,
    pub(crate) loadgen_rss_mb_peak: LoadgenRss,
    pub(crate) counters: BTreeMap<String, CounterFigures>,
}

/// What was asked for, and how many observers there were.
#[derive(Debug, Serialize)]
pub(crate) struct RunFigures {
    pub(crate) id: String,
    pub(crate) edges: Vec<String>,
    pub(crate) users: u32,
    pub(crate) connections_per_user: u32,
    pub(crate) ramp_per_sec: f64,
    pub(crate) heartbeat_ms: u64,
    pub(crate) churn_per_sec: f64,
    pub(crate) churn_pause_ms: u64,
    pub(crate) silent_percent: f64,
    pub(crate) female_percent: f64,
    pub(crate) active_users: u32,
    pub(crate) http_users: u32,
    pub(crate) customers: u32,
    pub(crate) observers: u32,
    pub(crate) observers_connected: usize,
    pub(crate) observers_dropped: usize,
    pub(crate) hold_secs: f64,
    pub(crate) timeout_ms: u64,
    pub(crate) sweep_ms: u64,
    pub(crate) worker_processes: u32,
    pub(crate) clock_ticks_per_sec: f64,
}

/// How long each phase took, seconds.
#[derive(Debug, Clone, Copy, Serialize)]
pub(crate) struct Phases {
    pub(crate) ramp: f64,
    pub(crate) hold: f64,
    pub(crate) close: f64,
    pub(crate) drain: f64,
    pub(crate) total: f64,
}

/// Connections over the run, in all and by client kind.
#[derive(Debug, Serialize)]
pub(crate) struct Connections {
    pub(crate) attempted: u64,
    pub(crate) held: u64,
    pub(crate) failed: u64,
    pub(crate) dropped: u64,
    pub(crate) held_after_ramp: u64,
    /// By the names of [`KINDS`].
    pub(crate) by_kind: BTreeMap<String, KindCounts>,
    pub(crate) failure_reasons: BTreeMap<String, u64>,
}

/// The connections of one client kind.
#[derive(Debug, Serialize)]
pub(crate) struct KindCounts {
    pub(crate) attempted: u64,
    pub(crate) ok: u64,
    pub(crate) failed: u64,
    pub(crate) dropped: u64,
    pub(crate) held: u64,
}

/// A distribution in ms (rounded to µs); `None`s when there are no samples.
#[derive(Debug, Serialize)]
pub(crate) struct Stats {
    pub(crate) p50: Option<f64>,
    pub(crate) p95: Option<f64>,
    pub(crate) p99: Option<f64>,
    pub(crate) max: Option<f64>,
    pub(crate) samples: usize,
}

/// Memory and CPU of one `--proc`.
#[derive(Debug, Serialize)]
pub(crate) struct ProcessFigures {
    pub(crate) name: String,
    pub(crate) pid: u32,
    pub(crate) rss_mb_start: Option<f64>,
    pub(crate) rss_mb_after_ramp: Option<f64>,
    pub(crate) rss_mb_end: Option<f64>,
    pub(crate) rss_kb_per_connection: Option<f64>,
    pub(crate) connections_after_ramp: u64,
    pub(crate) cpu_seconds_ramp: Option<f64>,
    pub(crate) cpu_seconds_hold: Option<f64>,
    pub(crate) cpu_percent_hold: Option<f64>,
    pub(crate) cpu_seconds_total: Option<f64>,
}

/// The load generator's own peak memory, MB.
#[derive(Debug, Serialize)]
pub(crate) struct LoadgenRss {
    pub(crate) coordinator: Option<f64>,
    pub(crate) worker_max: Option<f64>,
}

/// The counters of one `--metrics`, or why they could not be read.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub(crate) enum CounterFigures {
    Unreadable { error: String },
    Read(HoldCounters),
}

/// An edge's counters over the hold (and the fan-out over the whole run).
#[derive(Debug, Serialize)]
pub(crate) struct HoldCounters {
    pub(crate) seconds: f64,
    pub(crate) events_published: f64,
    pub(crate) events_published_per_sec: f64,
    pub(crate) heartbeats_received: f64,
    pub(crate) heartbeats_received_per_sec: f64,
    pub(crate) fanout_deliveries: f64,
    pub(crate) fanout_deliveries_per_sec: f64,
    pub(crate) deliveries_per_cpu_second: Option<f64>,
    /// From before the ramp to the end of the drain: where a ramp's fan-out is.
    pub(crate) run_fanout_deliveries: Option<f64>,
    pub(crate) run_deliveries_per_cpu_second: Option<f64>,
    /// Frames (`presence-update`, `presence-updates`) handed to sockets over the hold.
    pub(crate) fanout_frames: f64,
    pub(crate) frames_per_cpu_second: Option<f64>,
    pub(crate) run_fanout_frames: Option<f64>,
    pub(crate) run_frames_per_cpu_second: Option<f64>,
}

pub(crate) fn round(x: f64, digits: i32) -> f64 {
    let scale = 10f64.powi(digits);
    (x * scale).round() / scale
}

/// Nearest-rank percentile of sorted `values`.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// The distribution of `values` (ms).
pub(crate) fn stats(mut values: Vec<f64>) -> Stats {
    if values.is_empty() {
        return Stats {
            p50: None,
            p95: None,
            p99: None,
            max: None,
            samples: 0,
        };
    }
    values.sort_unstable_by(f64::total_cmp);
    let p = |q: f64| Some(round(percentile(&values, q), 3));
    Stats {
        p50: p(50.0),
        p95: p(95.0),
        p99: p(99.0),
        max: p(100.0),
        samples: values.len(),
    }
}

/// The workers' connection counts, summed, and their failure reasons.
pub(crate) fn connections(results: &[WorkerResult], held_after_ramp: u64) -> Connections {
    let per_kind = |field: fn(&WorkerResult) -> &PerKind<u64>, kind: usize| -> u64 {
        results.iter().map(|r| field(r)[kind]).sum()
    };
    let total = |field: fn(&WorkerResult) -> &PerKind<u64>| -> u64 {
        (0..KINDS.len()).map(|k| per_kind(field, k)).sum()
    };
    let by_kind = KINDS
        .iter()
        .enumerate()
        .map(|(k, name)| {
            let counts = KindCounts {
                attempted: per_kind(|r| &r.attempted, k),
                ok: per_kind(|r| &r.ok, k),
                failed: per_kind(|r| &r.failed, k),
                dropped: per_kind(|r| &r.dropped, k),
                held: per_kind(|r| &r.held, k),
            };
            ((*name).to_owned(), counts)
        })
        .collect();
    let mut failure_reasons: BTreeMap<String, u64> = BTreeMap::new();
    for r in results {
        for (reason, n) in &r.failures {
            *failure_reasons.entry(reason.clone()).or_default() += n;
        }
    }
    Connections {
        attempted: total(|r| &r.attempted),
        held: total(|r| &r.held),
        failed: total(|r| &r.failed),
        dropped: total(|r| &r.dropped),
        held_after_ramp,
        by_kind,
        failure_reasons,
    }
}

/// The setup times of every worker, µs to ms.
pub(crate) fn setup_ms(
    results: &[WorkerResult],
    times: fn(&WorkerResult) -> &Vec<u64>,
) -> Vec<f64> {
    results
        .iter()
        .flat_map(times)
        .map(|&us| us as f64 / 1000.0)
        .collect()
}

/// Counts indexed like [`analysis::CAUSES`], by cause.
pub(crate) fn by_cause(counts: &[u64; 5]) -> BTreeMap<String, u64> {
    analysis::CAUSES
        .iter()
        .zip(counts)
        .map(|(cause, n)| ((*cause).to_owned(), *n))
        .collect()
}

/// A count of every worker's, summed.
pub(crate) fn sum_of(results: &[WorkerResult], field: fn(&WorkerResult) -> u64) -> u64 {
    results.iter().map(field).sum()
}

/// Memory and CPU of every `--proc` over the phases.
pub(crate) fn processes(
    procs: &[Named<u32>],
    readings: &Readings,
    held_after_ramp: u64,
    hold_s: f64,
) -> Vec<ProcessFigures> {
    procs
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let (start, ramped, held, end) = (
                readings.start.procs[i],
                readings.hold_start.procs[i],
                readings.hold_end.procs[i],
                readings.end.procs[i],
            );
            let mb = |s: ProcSample| s.rss_kb.map(|kb| round(kb as f64 / 1024.0, 1));
            // The connections this process holds, when its `/metrics` says (an edge of
            // several); otherwise all of the run's.
            let own = readings
                .hold_start
                .metrics
                .get(&p.name)
                .and_then(|m| m.as_ref().ok())
                .and_then(|m| m.get(probes::COUNTERS[3]).copied())
                .filter(|c| *c > 0.0)
                .map(|c| c as u64);
            let conns = own.unwrap_or(held_after_ramp);
            let per_conn = match (start.rss_kb, ramped.rss_kb) {
                (Some(a), Some(b)) if conns > 0 => {
                    Some(round((b as f64 - a as f64) / conns as f64, 2))
                }
                _ => None,
            };
            let cpu = |a: ProcSample, b: ProcSample| match (a.cpu_s, b.cpu_s) {
                (Some(a), Some(b)) => Some(round(b - a, 2)),
                _ => None,
            };
            let hold_cpu = cpu(ramped, held);
            ProcessFigures {
                name: p.name.clone(),
                pid: p.value,
                rss_mb_start: mb(start),
                rss_mb_after_ramp: mb(ramped),
                rss_mb_end: mb(end),
                rss_kb_per_connection: per_conn,
                connections_after_ramp: conns,
                cpu_seconds_ramp: cpu(start, ramped),
                cpu_seconds_hold: hold_cpu,
                cpu_percent_hold: hold_cpu.map(|c| round(100.0 * c / hold_s.max(1e-9), 1)),
                cpu_seconds_total: cpu(start, end),
            }
        })
        .collect()
}

/// The counters of every `--metrics` over the hold, per CPU-second of the `--proc` of the
/// same name (`processes`, from [`processes`]).
pub(crate) fn counters<'a>(
    metrics: &[Named<String>],
    procs: &[Named<u32>],
    processes: &[ProcessFigures],
    readings: &'a Readings,
    hold_s: f64,
) -> BTreeMap<String, CounterFigures> {
    let mut counters = BTreeMap::new();
    for m in metrics {
        let get = |at: &'a Reading| at.metrics.get(&m.name);
        let (before, after) = (get(&readings.hold_start), get(&readings.hold_end));
        let (Some(Ok(before)), Some(Ok(after))) = (before, after) else {
            let why = [before, after]
                .into_iter()
                .flatten()
                .find_map(|r| r.as_ref().err().map(ToString::to_string))
                .unwrap_or_default();
            counters.insert(m.name.clone(), CounterFigures::Unreadable { error: why });
            continue;
        };
        let delta = |name: &str| {
            after.get(name).copied().unwrap_or(0.0) - before.get(name).copied().unwrap_or(0.0)
        };
        let published = delta(probes::COUNTERS[0]);
        let heartbeats = delta(probes::COUNTERS[1]);
        let deliveries = delta(probes::COUNTERS[2]);
        let process = procs
            .iter()
            .position(|p| p.name == m.name)
            .map(|i| &processes[i]);
        let cpu = process.and_then(|p| p.cpu_seconds_hold);
        let frames = delta(probes::COUNTERS[4]);
        // The whole run (ramp, hold, close, drain): where a ramp's fan-out is.
        let run_delta = |name: &str| match (get(&readings.start), get(&readings.end)) {
            (Some(Ok(a)), Some(Ok(b))) => {
                Some(b.get(name).copied().unwrap_or(0.0) - a.get(name).copied().unwrap_or(0.0))
            }
            _ => None,
        };
        let run_deliveries = run_delta(probes::COUNTERS[2]);
        let run_frames = run_delta(probes::COUNTERS[4]);
        let run_cpu = process.and_then(|p| p.cpu_seconds_total);
        let per_sec = |n: f64, digits| round(n / hold_s.max(1e-9), digits);
        counters.insert(
            m.name.clone(),
            CounterFigures::Read(HoldCounters {
                seconds: round(hold_s, 2),
                events_published: published,
                events_published_per_sec: per_sec(published, 2),
                heartbeats_received: heartbeats,
                heartbeats_received_per_sec: per_sec(heartbeats, 2),
                fanout_deliveries: deliveries,
                fanout_deliveries_per_sec: per_sec(deliveries, 1),
                deliveries_per_cpu_second: cpu
                    .filter(|c| *c > 0.0)
                    .map(|c| round(deliveries / c, 0)),
                run_fanout_deliveries: run_deliveries,
                run_deliveries_per_cpu_second: run_deliveries
                    .zip(run_cpu.filter(|c| *c > 0.0))
                    .map(|(d, c)| round(d / c, 0)),
                fanout_frames: frames,
                frames_per_cpu_second: cpu.filter(|c| *c > 0.0).map(|c| round(frames / c, 0)),
                run_fanout_frames: run_frames,
                run_frames_per_cpu_second: run_frames
                    .zip(run_cpu.filter(|c| *c > 0.0))
                    .map(|(f, c)| round(f / c, 0)),
            }),
        );
    }
    counters
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v = stats((1..=100).map(f64::from).collect());
        assert_eq!(v.p50, Some(50.0));
        assert_eq!(v.p99, Some(99.0));
        assert_eq!(v.max, Some(100.0));
        assert_eq!(v.samples, 100);
        assert_eq!(stats(vec![]).samples, 0);
        assert_eq!(stats(vec![]).p50, None);
    }
}
