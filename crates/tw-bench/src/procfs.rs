//! What the benchmark reads from /proc: CPU time of a process or of some of our own threads,
//! resident memory, and the machine's description.
//!
//! CPU time is `utime + stime` in clock ticks (`/proc/<pid>/stat` fields 14 and 15), which
//! covers every thread of the process, exited ones included. Our own simulators are measured
//! per thread (`/proc/self/task/<tid>/stat`), by the thread-name prefix of their runtime.

use std::path::Path;

use anyhow::{bail, Context};

/// CPU time in clock ticks, split as the kernel reports it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct CpuTicks {
    pub(crate) user: u64,
    pub(crate) system: u64,
}

impl CpuTicks {
    pub(crate) fn total(self) -> u64 {
        self.user + self.system
    }

    pub(crate) fn since(self, earlier: CpuTicks) -> CpuTicks {
        CpuTicks {
            user: self.user.saturating_sub(earlier.user),
            system: self.system.saturating_sub(earlier.system),
        }
    }
}

/// utime and stime of `/proc/<pid>/stat` (or any task's stat file).
fn cpu_ticks_of(stat_path: &Path) -> anyhow::Result<CpuTicks> {
    let text = std::fs::read_to_string(stat_path)
        .with_context(|| format!("reading {}", stat_path.display()))?;
    parse_stat(&text).with_context(|| format!("parsing {}", stat_path.display()))
}

/// Fields after the command name (which may contain spaces and parentheses) start at field 3
/// (`state`); utime is field 14 and stime field 15.
fn parse_stat(text: &str) -> anyhow::Result<CpuTicks> {
    let Some(close) = text.rfind(')') else {
        bail!("no ')' after the command name");
    };
    let fields: Vec<&str> = text[close + 1..].split_whitespace().collect();
    let field = |number: usize| -> anyhow::Result<u64> {
        let index = number - 3;
        fields
            .get(index)
            .with_context(|| format!("field {number} missing"))?
            .parse::<u64>()
            .with_context(|| format!("field {number} is not a number"))
    };
    Ok(CpuTicks {
        user: field(14)?,
        system: field(15)?,
    })
}

pub(crate) fn process_cpu(pid: u32) -> anyhow::Result<CpuTicks> {
    cpu_ticks_of(Path::new(&format!("/proc/{pid}/stat")))
}

/// Sum over this process's live threads whose name starts with `prefix`.
pub(crate) fn own_threads_cpu(prefix: &str) -> anyhow::Result<CpuTicks> {
    let mut sum = CpuTicks::default();
    for entry in std::fs::read_dir("/proc/self/task").context("listing /proc/self/task")? {
        let dir = entry.context("reading /proc/self/task")?.path();
        // A thread may exit between listing and reading: skip it rather than fail.
        let Ok(comm) = std::fs::read_to_string(dir.join("comm")) else {
            continue;
        };
        if !comm.trim_end().starts_with(prefix) {
            continue;
        }
        if let Ok(ticks) = cpu_ticks_of(&dir.join("stat")) {
            sum.user += ticks.user;
            sum.system += ticks.system;
        }
    }
    Ok(sum)
}

/// Memory figures of `/proc/<pid>/status`, in KiB.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Memory {
    /// Resident set size now.
    pub(crate) rss_kib: u64,
    /// Peak resident set size since the process started ("high water mark").
    pub(crate) hwm_kib: u64,
}

pub(crate) fn memory(pid: u32) -> anyhow::Result<Memory> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    let kib = |key: &str| -> anyhow::Result<u64> {
        let line = text
            .lines()
            .find(|line| line.starts_with(key))
            .with_context(|| format!("{key} missing from {path}"))?;
        line[key.len()..]
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse::<u64>()
            .with_context(|| format!("{key} in {path} is not a number"))
    };
    Ok(Memory {
        rss_kib: kib("VmRSS:")?,
        hwm_kib: kib("VmHWM:")?,
    })
}

/// Clock ticks per second (`getconf CLK_TCK`); 100 on every Linux we run on, which is also
/// the fallback.
pub(crate) fn clock_ticks_per_second() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .and_then(|text| text.trim().parse::<u64>().ok())
        .filter(|&ticks| ticks > 0)
        .unwrap_or(100)
}

/// The machine, as docs/benchmarks.md reports it.
#[derive(Debug, Clone)]
pub(crate) struct Machine {
    pub(crate) cpus: usize,
    pub(crate) model: String,
    pub(crate) mem_total_mib: u64,
}

pub(crate) fn machine() -> Machine {
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|line| line.starts_with("model name"))
        .and_then(|line| line.split_once(':'))
        .map(|(_, model)| model.trim().to_owned())
        .unwrap_or_else(|| "unknown".to_owned());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_total_mib = meminfo
        .lines()
        .find(|line| line.starts_with("MemTotal:"))
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|kib| kib.parse::<u64>().ok())
        .map(|kib| kib / 1024)
        .unwrap_or(0);
    Machine {
        cpus,
        model,
        mem_total_mib,
    }
}

/// The 1-minute load average, to judge how noisy the shared machine was.
pub(crate) fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_found_after_a_command_name_with_spaces() {
        let line = "4242 (tokio (worker) 1) S 1 4242 4242 0 -1 4194560 1559 0 0 0 \
                    731 268 0 0 20 0 9 0 12345 123456789 2345 18446744073709551615";
        let ticks = parse_stat(line).unwrap();
        assert_eq!(
            ticks,
            CpuTicks {
                user: 731,
                system: 268
            }
        );
    }

    #[test]
    fn own_process_is_readable() {
        let ticks = process_cpu(std::process::id()).unwrap();
        assert!(ticks.total() < u64::MAX);
        let memory = memory(std::process::id()).unwrap();
        assert!(memory.hwm_kib >= memory.rss_kib);
    }
}
