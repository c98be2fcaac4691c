//! Broker CPU time and memory from Linux `/proc`, for `--broker-pid` and `recovery`.
//!
//! CPU is `utime + stime` of `/proc/PID/stat` (fields 14 and 15, in clock ticks; the
//! command name in field 2 may hold spaces and parentheses, so fields are counted after the
//! last `)`). Memory is `VmRSS` of `/proc/PID/status`. Parsing is pure and tested on fixed
//! text; only [`sample`] reads files.

use std::time::Duration;

/// Index of `utime` among the fields after the command name (`state` is index 0 = field 3).
const STAT_UTIME_INDEX: usize = 14 - 3;
/// Index of `stime` likewise.
const STAT_STIME_INDEX: usize = 15 - 3;
const BYTES_PER_KIB: u64 = 1024;

/// `/proc` could not be read or parsed.
#[derive(Debug, thiserror::Error)]
pub enum ProcError {
    /// The file could not be read (usually: no such process).
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file did not have the expected shape.
    #[error("cannot parse {path}: {what}")]
    Parse {
        /// The file.
        path: String,
        /// What was missing.
        what: &'static str,
    },
}

/// One reading of a process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcSample {
    /// User plus system CPU time, in clock ticks.
    pub cpu_ticks: u64,
    /// Resident set size, in bytes.
    pub rss_bytes: u64,
}

/// Reads `/proc/PID/stat` and `/proc/PID/status`.
pub fn sample(pid: u32) -> Result<ProcSample, ProcError> {
    let stat_path = format!("/proc/{pid}/stat");
    let stat = read(&stat_path)?;
    let cpu_ticks = parse_stat_cpu_ticks(&stat).ok_or(ProcError::Parse { path: stat_path, what: "utime and stime" })?;
    Ok(ProcSample { cpu_ticks, rss_bytes: rss_bytes(pid)? })
}

/// `VmRSS` of `pid`, in bytes.
pub fn rss_bytes(pid: u32) -> Result<u64, ProcError> {
    let status_path = format!("/proc/{pid}/status");
    let status = read(&status_path)?;
    parse_status_rss_bytes(&status).ok_or(ProcError::Parse { path: status_path, what: "VmRSS" })
}

/// Clock ticks per second (`sysconf(_SC_CLK_TCK)`, 100 on every Linux we know).
#[must_use]
pub fn clock_ticks_per_second() -> u64 {
    // SAFETY: sysconf has no preconditions and only reads a constant.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(ticks).ok().filter(|&ticks| ticks > 0).unwrap_or(100)
}

/// CPU time of `ticks` clock ticks.
#[must_use]
pub fn ticks_to_duration(ticks: u64) -> Duration {
    let per_second = clock_ticks_per_second();
    Duration::from_secs(ticks / per_second) + Duration::from_nanos((ticks % per_second) * 1_000_000_000 / per_second)
}

fn read(path: &str) -> Result<String, ProcError> {
    std::fs::read_to_string(path).map_err(|source| ProcError::Read { path: path.to_string(), source })
}

/// `utime + stime` from the text of `/proc/PID/stat`.
#[must_use]
pub fn parse_stat_cpu_ticks(stat: &str) -> Option<u64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let utime: u64 = fields.get(STAT_UTIME_INDEX)?.parse().ok()?;
    let stime: u64 = fields.get(STAT_STIME_INDEX)?.parse().ok()?;
    Some(utime + stime)
}

/// `VmRSS` in bytes from the text of `/proc/PID/status`.
#[must_use]
pub fn parse_status_rss_bytes(status: &str) -> Option<u64> {
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    let mut words = line["VmRSS:".len()..].split_whitespace();
    let kib: u64 = words.next()?.parse().ok()?;
    (words.next()? == "kB").then_some(kib * BYTES_PER_KIB)
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAT: &str = "4242 (weir serve (x)) S 1 4242 4242 0 -1 4194560 1234 0 0 0 \
                        250 75 0 0 20 0 9 0 123456 1000000 5000 18446744073709551615";

    #[test]
    fn cpu_ticks_are_utime_plus_stime_even_with_odd_names() {
        assert_eq!(parse_stat_cpu_ticks(STAT), Some(325));
        assert_eq!(parse_stat_cpu_ticks("1 (x) S 1 2"), None);
        assert_eq!(parse_stat_cpu_ticks("garbage"), None);
    }

    #[test]
    fn rss_is_read_in_bytes() {
        let status = "Name:\tweir\nVmPeak:\t  999 kB\nVmRSS:\t   2048 kB\nThreads:\t9\n";
        assert_eq!(parse_status_rss_bytes(status), Some(2048 * 1024));
        assert_eq!(parse_status_rss_bytes("Name:\tkthreadd\n"), None);
    }

    #[test]
    fn own_process_can_be_sampled() {
        let own = sample(std::process::id()).unwrap();
        assert!(own.rss_bytes > 0);
        assert!(matches!(sample(u32::MAX), Err(ProcError::Read { .. })));
    }

    #[test]
    fn ticks_convert_to_time() {
        let per_second = clock_ticks_per_second();
        assert_eq!(ticks_to_duration(per_second * 3), Duration::from_secs(3));
    }
}
