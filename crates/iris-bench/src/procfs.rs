//! CPU time and memory of the server processes, read from `/proc/<pid>/stat` and
//! `/proc/<pid>/status`.
//!
//! A target may be several processes (nginx: a master and its workers), so everything works on
//! a [`ProcSet`]: a root pid and, on each sample, its current children.

use std::io;
use std::time::Duration;

/// One process at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProcSample {
    /// User + system CPU time, in clock ticks.
    pub cpu_ticks: u64,
    /// Resident set size now (`VmRSS`), KiB.
    pub rss_kib: u64,
    /// Peak resident set size (`VmHWM`), KiB, since start or the last [`reset_peak`].
    pub hwm_kib: u64,
}

/// `(ppid, utime + stime)` from the text of `/proc/<pid>/stat`.
pub fn parse_stat(text: &str) -> Option<(u32, u64)> {
    // The command name (field 2) is in parentheses and may itself contain spaces or ')'.
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // fields[0] is field 3 (state): ppid is field 4, utime 14, stime 15.
    let ppid = fields.get(1)?.parse().ok()?;
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((ppid, utime + stime))
}

/// `(VmRSS, VmHWM)` in KiB from the text of `/proc/<pid>/status` (0 when absent).
pub fn parse_status(text: &str) -> (u64, u64) {
    let mut rss = 0;
    let mut hwm = 0;
    for line in text.lines() {
        let value = |l: &str| -> u64 {
            l.split_whitespace()
                .nth(1)
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        if line.starts_with("VmRSS:") {
            rss = value(line);
        } else if line.starts_with("VmHWM:") {
            hwm = value(line);
        }
    }
    (rss, hwm)
}

/// A sample of one process.
pub fn sample(pid: u32) -> io::Result<ProcSample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let (_, cpu_ticks) = parse_stat(&stat).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("unreadable /proc/{pid}/stat"),
        )
    })?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let (rss_kib, hwm_kib) = parse_status(&status);
    Ok(ProcSample {
        cpu_ticks,
        rss_kib,
        hwm_kib,
    })
}

/// The pids whose parent is `pid` (one scan of `/proc`, bounded by the number of processes).
pub fn children(pid: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for entry in dir.flatten() {
        let Some(child) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat"))
            && parse_stat(&stat).is_some_and(|(ppid, _)| ppid == pid)
        {
            out.push(child);
        }
    }
    out.sort_unstable();
    out
}

/// Reset the peak RSS (`VmHWM`) of `pid` to its current RSS (Linux `clear_refs` value 5).
pub fn reset_peak(pid: u32) -> io::Result<()> {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5")
}

/// Clock ticks per second (`CLK_TCK`), for converting [`ProcSample::cpu_ticks`].
pub fn ticks_per_second() -> u64 {
    rustix::param::clock_ticks_per_second().max(1)
}

/// The processes of one target: a root and (optionally) its children.
#[derive(Debug, Clone)]
pub struct ProcSet {
    pub root: u32,
    pub with_children: bool,
}

/// The sum over a [`ProcSet`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SetSample {
    pub cpu_ticks: u64,
    pub rss_kib: u64,
    /// Sum of the processes' peaks (an upper bound of the set's peak).
    pub hwm_kib: u64,
    pub processes: usize,
}

impl ProcSet {
    pub fn single(pid: u32) -> ProcSet {
        ProcSet {
            root: pid,
            with_children: false,
        }
    }

    pub fn pids(&self) -> Vec<u32> {
        let mut pids = vec![self.root];
        if self.with_children {
            pids.extend(children(self.root));
        }
        pids
    }

    /// Sum of the samples of every process of the set that could be read.
    pub fn sample(&self) -> SetSample {
        let mut s = SetSample::default();
        for pid in self.pids() {
            if let Ok(p) = sample(pid) {
                s.cpu_ticks += p.cpu_ticks;
                s.rss_kib += p.rss_kib;
                s.hwm_kib += p.hwm_kib;
                s.processes += 1;
            }
        }
        s
    }

    /// Reset the peak RSS of every process; false if any reset failed.
    pub fn reset_peak(&self) -> bool {
        self.pids().into_iter().all(|p| reset_peak(p).is_ok())
    }
}

/// CPU time between two samples.
pub fn cpu_between(before: &SetSample, after: &SetSample) -> Duration {
    let ticks = after.cpu_ticks.saturating_sub(before.cpu_ticks);
    Duration::from_secs_f64(ticks as f64 / ticks_per_second() as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields() {
        let text = "4832 (iris (x) y) S 4800 4832 4800 0 -1 4194560 5301 0 0 0 1234 567 0 0 20 0 6 0 \
                    123456 1000000 2000 18446744073709551615 1 1 0 0 0 0 0 4096 17987 0 0 0 17 1 0 0 0 0 0";
        assert_eq!(parse_stat(text), Some((4800, 1234 + 567)));
        assert_eq!(parse_stat("garbage"), None);
        assert_eq!(parse_stat("1 (x) S"), None);
    }

    #[test]
    fn status_fields() {
        let text = "Name:\tiris\nVmPeak:\t  900000 kB\nVmHWM:\t   51234 kB\nVmRSS:\t   40960 kB\nThreads:\t4\n";
        assert_eq!(parse_status(text), (40960, 51234));
        assert_eq!(parse_status("Name:\tx\n"), (0, 0));
    }

    #[test]
    fn samples_this_process() {
        let me = std::process::id();
        let s = sample(me).unwrap();
        assert!(s.rss_kib > 0 && s.hwm_kib >= s.rss_kib, "{s:?}");
        // Burn a little CPU so the tick count can move.
        let t0 = std::time::Instant::now();
        let mut x = 0u64;
        while t0.elapsed() < Duration::from_millis(60) {
            x = x.wrapping_mul(31).wrapping_add(7);
        }
        std::hint::black_box(x);
        let after = ProcSet::single(me).sample();
        assert_eq!(after.processes, 1);
        assert!(after.cpu_ticks >= s.cpu_ticks);
        assert!(ticks_per_second() >= 1);
    }

    #[test]
    fn finds_child_processes() {
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        let kids = children(std::process::id());
        let _ = child.kill();
        let _ = child.wait();
        assert!(kids.contains(&child.id()), "{kids:?}");
    }
}
