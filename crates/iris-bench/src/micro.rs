//! The criterion micro-benchmarks' results (`target/criterion/**/new/`), read back for the
//! report. Only results written since the run started are taken, so a stale file never shows
//! up as a fresh number.

use std::path::Path;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

/// One micro-benchmark.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct MicroResult {
    pub id: String,
    /// Median time per iteration, nanoseconds.
    pub median_ns: f64,
    /// Bytes per iteration, when the benchmark declared a byte throughput.
    pub bytes: Option<u64>,
    /// Elements per iteration, when declared.
    pub elements: Option<u64>,
}

impl MicroResult {
    /// MB/s (10^6 bytes) when a byte throughput was declared.
    pub fn mb_per_s(&self) -> Option<f64> {
        let b = self.bytes? as f64;
        (self.median_ns > 0.0).then(|| b / self.median_ns * 1e9 / 1e6)
    }
}

#[derive(Deserialize)]
struct BenchmarkJson {
    full_id: String,
    throughput: Option<Throughput>,
}

#[derive(Deserialize)]
enum Throughput {
    Bytes(u64),
    BytesDecimal(u64),
    Elements(u64),
}

#[derive(Deserialize)]
struct Estimates {
    median: Estimate,
}

#[derive(Deserialize)]
struct Estimate {
    point_estimate: f64,
}

/// Every benchmark under `dir` whose results were written at or after `since`, sorted by id.
pub fn read(dir: &Path, since: SystemTime) -> Vec<MicroResult> {
    let mut out = Vec::new();
    walk(dir, 0, &mut |new_dir| {
        let est = new_dir.join("estimates.json");
        let fresh = std::fs::metadata(&est)
            .and_then(|m| m.modified())
            .is_ok_and(|t| t >= since);
        if !fresh {
            return;
        }
        let bench: Option<BenchmarkJson> = std::fs::read(new_dir.join("benchmark.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        let estimates: Option<Estimates> = std::fs::read(&est)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        if let (Some(b), Some(e)) = (bench, estimates) {
            let (bytes, elements) = match b.throughput {
                Some(Throughput::Bytes(n) | Throughput::BytesDecimal(n)) => (Some(n), None),
                Some(Throughput::Elements(n)) => (None, Some(n)),
                None => (None, None),
            };
            out.push(MicroResult {
                id: b.full_id,
                median_ns: e.median.point_estimate,
                bytes,
                elements,
            });
        }
    });
    out.sort_by(|a, b| a.id.cmp(&b.id));
    out
}

/// Calls `f` for every directory named `new` under `dir`, at most 6 levels deep.
fn walk(dir: &Path, depth: usize, f: &mut dyn FnMut(&Path)) {
    if depth > 6 {
        return;
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if !p.is_dir() {
            continue;
        }
        if p.file_name().is_some_and(|n| n == "new") {
            f(&p);
        } else if p.file_name().is_some_and(|n| n != "report" && n != "base") {
            walk(&p, depth + 1, f);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_fresh_results_only() {
        let dir = tempfile::tempdir().unwrap();
        let write = |group: &str, id: &str, tp: &str, ns: f64| {
            let d = dir.path().join(group).join(id).join("new");
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(
                d.join("benchmark.json"),
                format!(r#"{{"group_id":"{group}","function_id":"{id}","value_str":null,"throughput":{tp},"full_id":"{group}/{id}","directory_name":"{group}/{id}","title":"{group}/{id}"}}"#),
            )
            .unwrap();
            std::fs::write(
                d.join("estimates.json"),
                format!(r#"{{"mean":{{"point_estimate":{ns},"standard_error":1.0}},"median":{{"point_estimate":{ns},"standard_error":1.0}}}}"#),
            )
            .unwrap();
        };
        write("peek", "claude_code_80k", r#"{"Bytes":80000}"#, 40_000.0);
        write("policy", "evaluate", "null", 120.0);
        let all = read(dir.path(), SystemTime::UNIX_EPOCH);
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].id, "peek/claude_code_80k");
        assert_eq!(all[0].bytes, Some(80_000));
        assert!((all[0].mb_per_s().unwrap() - 2000.0).abs() < 1e-6);
        assert_eq!(all[1].median_ns, 120.0);
        assert_eq!(all[1].mb_per_s(), None);
        let future = SystemTime::now() + std::time::Duration::from_secs(3600);
        assert!(read(dir.path(), future).is_empty());
    }
}
