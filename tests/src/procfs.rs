//! Readings of a process from Linux's `/proc`: the CPU time and resident memory of the
//! servers a test or benchmark started, and the parsers of `/proc/<pid>/stat` and
//! `/proc/<pid>/status` that the load generator's probes share.

use anyhow::Context;

/// CPU seconds (user + system) a process has used so far, from `/proc/<pid>/stat`
/// (clock ticks of 1/100 s, as on every Linux this runs on).
pub fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    let ticks = cpu_ticks(&stat).context("malformed /proc/<pid>/stat")?;
    Ok(ticks as f64 / 100.0)
}

/// Resident memory of a process in bytes, from `/proc/<pid>/status`.
pub fn rss_bytes(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    let kb = status_kib(&status, "VmRSS:").context("no VmRSS in /proc/<pid>/status")?;
    Ok(kb * 1024)
}

/// `utime + stime`, in clock ticks, from the text of `/proc/<pid>/stat`: fields 14 and 15,
/// counted after the command name (which may itself hold spaces and parentheses).
pub fn cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state).
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// A field in kB (`"VmRSS:"`, `"VmHWM:"`) of the text of `/proc/<pid>/status`.
pub fn status_kib(status: &str, field: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_is_read_after_the_command_name() {
        let stat = "42 (a (weird) name) S 1 42 42 0 -1 4194560 100 0 0 0 250 31 0 0 20 0 9 0";
        assert_eq!(cpu_ticks(stat), Some(281));
    }

    #[test]
    fn status_fields_are_read_in_kb() {
        let status = "Name:\tpresence\nVmHWM:\t  20480 kB\nVmRSS:\t  10240 kB\n";
        assert_eq!(status_kib(status, "VmRSS:"), Some(10_240));
        assert_eq!(status_kib(status, "VmHWM:"), Some(20_480));
        assert_eq!(status_kib(status, "VmSwap:"), None);
    }
}
