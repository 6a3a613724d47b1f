//! Latency histograms and the small statistics the report needs (medians of repetitions).

use std::time::Duration;

use hdrhistogram::Histogram;

/// Highest latency a histogram records: 5 minutes, in nanoseconds. Larger values are clamped.
const MAX_NANOS: u64 = 300 * 1_000_000_000;

/// A latency histogram in nanoseconds, 3 significant digits (0.1 % resolution).
#[derive(Debug, Clone)]
pub struct LatencyHist {
    h: Histogram<u64>,
}

impl Default for LatencyHist {
    fn default() -> Self {
        Self::new()
    }
}

impl LatencyHist {
    pub fn new() -> LatencyHist {
        match Histogram::new_with_bounds(1, MAX_NANOS, 3) {
            Ok(h) => LatencyHist { h },
            // Constant bounds that satisfy hdrhistogram's rules (low >= 1, high >= 2 * low,
            // sigfig <= 5): this arm cannot be reached by any input.
            Err(e) => unreachable!("constant histogram bounds rejected: {e}"),
        }
    }

    pub fn record(&mut self, d: Duration) {
        let n = u64::try_from(d.as_nanos())
            .unwrap_or(u64::MAX)
            .clamp(1, MAX_NANOS);
        self.h.saturating_record(n);
    }

    pub fn merge(&mut self, other: &LatencyHist) {
        // Both histograms have the same bounds; a failure would only lose samples above them.
        let _ = self.h.add(&other.h);
    }

    pub fn count(&self) -> u64 {
        self.h.len()
    }

    /// The value at `q` (0.0–1.0) in microseconds; 0 when empty.
    pub fn quantile_us(&self, q: f64) -> f64 {
        if self.h.is_empty() {
            return 0.0;
        }
        self.h.value_at_quantile(q) as f64 / 1000.0
    }

    pub fn max_us(&self) -> f64 {
        if self.h.is_empty() {
            return 0.0;
        }
        self.h.max() as f64 / 1000.0
    }

    pub fn mean_us(&self) -> f64 {
        if self.h.is_empty() {
            return 0.0;
        }
        self.h.mean() / 1000.0
    }

    pub fn summary(&self) -> Summary {
        Summary {
            count: self.count(),
            p50_us: self.quantile_us(0.50),
            p90_us: self.quantile_us(0.90),
            p99_us: self.quantile_us(0.99),
            max_us: self.max_us(),
            mean_us: self.mean_us(),
        }
    }
}

/// Percentiles of one histogram, in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Summary {
    pub count: u64,
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub max_us: f64,
    pub mean_us: f64,
}

/// The median of `values` (the mean of the two middle ones for an even count); `NaN` when empty.
pub fn median(values: &[f64]) -> f64 {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| !x.is_nan()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    }
}

/// The median of `f` over `items`.
pub fn median_by<T>(items: &[T], f: impl Fn(&T) -> f64) -> f64 {
    median(&items.iter().map(f).collect::<Vec<_>>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(median(&[7.0]), 7.0);
        assert!(median(&[]).is_nan());
        assert_eq!(median(&[f64::NAN, 5.0]), 5.0);
    }

    #[test]
    fn histogram_percentiles() {
        let mut h = LatencyHist::new();
        for us in 1..=1000u64 {
            h.record(Duration::from_micros(us));
        }
        let s = h.summary();
        assert_eq!(s.count, 1000);
        assert!((s.p50_us - 500.0).abs() <= 1.0, "{s:?}");
        assert!((s.p99_us - 990.0).abs() <= 1.0, "{s:?}");
        assert!((s.max_us - 1000.0).abs() <= 1.0, "{s:?}");
        let mut other = LatencyHist::new();
        other.record(Duration::from_millis(50));
        h.merge(&other);
        assert_eq!(h.count(), 1001);
        assert!((h.max_us() - 50_000.0).abs() <= 50.0);
    }

    #[test]
    fn empty_and_extreme_values() {
        let mut h = LatencyHist::new();
        assert_eq!(h.summary(), Summary::default());
        h.record(Duration::ZERO);
        h.record(Duration::from_secs(10_000));
        assert_eq!(h.count(), 2);
        assert!(h.max_us() <= 300.0 * 1e6 * 1.001);
    }
}
