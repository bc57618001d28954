//! Readings of processes (`/proc`) and of Prometheus counters.

use std::collections::HashMap;

use presence_e2e::procfs;

/// The peak resident memory (`VmHWM`) of this process, KiB.
pub(crate) fn peak_rss_kb() -> Option<u64> {
    status_field("self", "VmHWM:")
}

fn status_field(pid: &str, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    procfs::status_kib(&status, field)
}

/// Resident memory and CPU time of a process at one moment.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ProcSample {
    /// `VmRSS`, KiB.
    pub(crate) rss_kb: Option<u64>,
    /// `utime + stime`, seconds.
    pub(crate) cpu_s: Option<f64>,
}

/// Clock ticks per second of `/proc/PID/stat` times: `getconf CLK_TCK`, or 100 (the value
/// on Linux) if that cannot be run.
pub(crate) fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .trim()
                .parse::<f64>()
                .ok()
        })
        .filter(|t| *t > 0.0)
        .unwrap_or(100.0)
}

/// Reads `/proc/<pid>` (`"self"` for this process); fields it cannot read are `None`.
pub(crate) fn sample(pid: &str, ticks: f64) -> ProcSample {
    let rss_kb = status_field(pid, "VmRSS:");
    let cpu_s = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| procfs::cpu_ticks(&stat))
        .map(|t| t as f64 / ticks);
    ProcSample { rss_kb, cpu_s }
}

/// The counters (and the connection gauge, last) read from one `/metrics` endpoint.
pub(crate) const COUNTERS: [&str; 5] = [
    "presence_events_published_total",
    "presence_heartbeats_received_total",
    "presence_fanout_deliveries_total",
    "presence_connections",
    "presence_fanout_frames_total",
];

/// Each of [`COUNTERS`] of one `/metrics` endpoint, or why they could not be read.
pub(crate) type Scrape = anyhow::Result<HashMap<&'static str, f64>>;

/// What the server processes said at one moment of a run: a [`ProcSample`] of every
/// `--proc` (in their order) and the [`Scrape`] of every `--metrics` (by name).
pub(crate) struct Reading {
    pub(crate) procs: Vec<ProcSample>,
    pub(crate) metrics: HashMap<String, Scrape>,
}

/// The readings the figures compare: before the ramp, around the hold, after the drain.
pub(crate) struct Readings {
    pub(crate) start: Reading,
    pub(crate) hold_start: Reading,
    pub(crate) hold_end: Reading,
    pub(crate) end: Reading,
}

/// Each of [`COUNTERS`] at `url`, summed over its label sets (0 when absent).
pub(crate) async fn scrape(url: &str) -> Scrape {
    let response = presence_e2e::http("GET", url, &[], None).await?;
    if response.status != 200 {
        anyhow::bail!("GET {url}: status {}", response.status);
    }
    Ok(sum_counters(&response.body))
}

fn sum_counters(text: &str) -> HashMap<&'static str, f64> {
    let mut totals: HashMap<&'static str, f64> = COUNTERS.iter().map(|n| (*n, 0.0)).collect();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let name = line.split(['{', ' ']).next().unwrap_or_default();
        let Some(total) = COUNTERS
            .iter()
            .find(|c| **c == name)
            .and_then(|c| totals.get_mut(c))
        else {
            continue;
        };
        if let Some(value) = line
            .rsplit_once(' ')
            .and_then(|(_, v)| v.parse::<f64>().ok())
        {
            *total += value;
        }
    }
    totals
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_summed_over_label_sets() {
        let text = "# TYPE presence_events_published_total counter\n\
            presence_events_published_total{kind=\"beat\",outcome=\"ok\"} 12\n\
            presence_events_published_total{kind=\"join\",outcome=\"ok\"} 30\n\
            presence_events_published_total_other 99\n\
            presence_fanout_deliveries_total 7\n";
        let totals = sum_counters(text);
        assert_eq!(totals["presence_events_published_total"], 42.0);
        assert_eq!(totals["presence_fanout_deliveries_total"], 7.0);
        assert_eq!(totals["presence_heartbeats_received_total"], 0.0);
    }
}
