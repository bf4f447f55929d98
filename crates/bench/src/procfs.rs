//! Process and thread statistics from /proc: CPU time (utime + stime) and resident memory.
//! Linux-only by nature; the benchmark's CPU and memory columns come from here.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use crate::error::{BenchError, Result};

/// Whose CPU time a measurement reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CpuSource {
    /// A whole process (all its threads, including exited ones).
    Process(u32),
    /// One thread of this process.
    OwnThread(u32),
    /// Nothing to measure (an external server whose PID was not given).
    Unknown,
}

impl CpuSource {
    fn stat_path(self) -> Option<PathBuf> {
        match self {
            Self::Process(pid) => Some(PathBuf::from(format!("/proc/{pid}/stat"))),
            Self::OwnThread(tid) => Some(PathBuf::from(format!("/proc/self/task/{tid}/stat"))),
            Self::Unknown => None,
        }
    }

    /// CPU time consumed so far, or `None` for [`CpuSource::Unknown`].
    pub fn cpu_time(self) -> Result<Option<Duration>> {
        let Some(path) = self.stat_path() else {
            return Ok(None);
        };
        let text = std::fs::read_to_string(&path).map_err(|e| BenchError::Procfs {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        let ticks = parse_cpu_ticks(&text).ok_or_else(|| BenchError::Procfs {
            path: path.display().to_string(),
            reason: "unexpected stat format".to_owned(),
        })?;
        Ok(Some(ticks_to_duration(ticks)))
    }
}

/// utime + stime (fields 14 and 15) of a stat line. The command name in field 2 may contain
/// spaces and parentheses, so fields are counted from the last `)`.
pub fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let after_comm = &stat[stat.rfind(')')? + 1..];
    // after_comm starts with field 3 (state); utime is field 14, i.e. index 11 here.
    let mut fields = after_comm.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// Clock ticks per second as `getconf CLK_TCK` reports it, 100 when that cannot be run.
pub fn clock_ticks_per_second() -> u64 {
    static TICKS: OnceLock<u64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|out| String::from_utf8(out.stdout).ok())
            .and_then(|text| text.trim().parse().ok())
            .filter(|&ticks| ticks > 0)
            .unwrap_or(100)
    })
}

fn ticks_to_duration(ticks: u64) -> Duration {
    let per_second = clock_ticks_per_second();
    Duration::from_secs(ticks / per_second)
        + Duration::from_nanos((ticks % per_second) * 1_000_000_000 / per_second)
}

/// Resident set size of a process in KiB (VmRSS from /proc/PID/status).
pub fn resident_kib(pid: u32) -> Result<u64> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).map_err(|e| BenchError::Procfs {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    parse_vm_rss_kib(&text).ok_or(BenchError::Procfs {
        path,
        reason: "no VmRSS line".to_owned(),
    })
}

/// The VmRSS value of a status file, in KiB.
pub fn parse_vm_rss_kib(status: &str) -> Option<u64> {
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    line["VmRSS:".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The kernel thread id of the calling thread, read from the /proc/thread-self link
/// (`PID/task/TID`), which needs no unsafe syscall wrapper.
pub fn current_thread_id() -> Result<u32> {
    let link = std::fs::read_link("/proc/thread-self").map_err(|e| BenchError::Procfs {
        path: "/proc/thread-self".to_owned(),
        reason: e.to_string(),
    })?;
    link.file_name()
        .and_then(|name| name.to_str())
        .and_then(|name| name.parse().ok())
        .ok_or_else(|| BenchError::Procfs {
            path: "/proc/thread-self".to_owned(),
            reason: format!("unexpected link target {}", link.display()),
        })
}

/// The 1-minute load average and the number of CPUs, when readable.
pub fn machine_load() -> Option<(f64, usize)> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    let load = text.split_whitespace().next()?.parse().ok()?;
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    Some((load, cpus))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_command_name() {
        let stat = "4242 (chat server) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 4 0";
        assert_eq!(parse_cpu_ticks(stat), Some(325));
        assert_eq!(parse_cpu_ticks("garbage"), None);
    }

    #[test]
    fn vm_rss_is_read_in_kib() {
        let status = "Name:\tchat-server\nVmPeak:\t  9000 kB\nVmRSS:\t    5120 kB\n";
        assert_eq!(parse_vm_rss_kib(status), Some(5120));
        assert_eq!(parse_vm_rss_kib("Name: x\n"), None);
    }

    #[test]
    fn own_process_and_thread_are_measurable() {
        let pid = std::process::id();
        assert!(CpuSource::Process(pid).cpu_time().unwrap().is_some());
        let tid = current_thread_id().unwrap();
        assert!(CpuSource::OwnThread(tid).cpu_time().unwrap().is_some());
        assert!(resident_kib(pid).unwrap() > 0);
    }
}
