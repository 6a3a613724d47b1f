//! `database.retention.duration`: how long captures are kept.
//!
//! Aperture's values: `""` keeps forever, `"0"` is zero retention (nothing kept), otherwise a
//! duration such as `"30d"` or `"720h"` between 1 hour and 3650 days. The syntax is Go's
//! `time.ParseDuration` (a sequence of decimal numbers with units, e.g. `"1h30m"`, `"1.5h"`) plus
//! a `d` unit of 24 hours. Units accepted: `d`, `h`, `m`, `s`, `ms`. Any spelling of zero (`"0"`,
//! `"0d"`, `"0h"`) means zero retention.

use thiserror::Error;

const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 24 * HOUR_MS;
/// Shortest accepted retention.
pub const MIN_RETENTION_MS: i64 = HOUR_MS;
/// Longest accepted retention (3650 days).
pub const MAX_RETENTION_MS: i64 = 3650 * DAY_MS;

/// How long captures are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retention {
    /// `""`: never purge.
    Forever,
    /// `"0"`: keep nothing.
    Zero,
    /// Keep records younger than this many milliseconds.
    Duration { ms: i64 },
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RetentionError {
    #[error("invalid duration {0:?}: expected e.g. \"30d\", \"720h\", \"0\" or \"\"")]
    Syntax(String),
    #[error("unknown unit {unit:?} in {input:?} (use d, h, m, s or ms)")]
    Unit { input: String, unit: String },
    #[error("retention {0:?} is shorter than the minimum of 1h")]
    TooShort(String),
    #[error("retention {0:?} is longer than the maximum of 3650d")]
    TooLong(String),
}

impl Retention {
    /// Parse a `database.retention.duration` value (see the module docs).
    pub fn parse(input: &str) -> Result<Retention, RetentionError> {
        let s = input.trim();
        if s.is_empty() {
            return Ok(Retention::Forever);
        }
        if s == "0" {
            return Ok(Retention::Zero);
        }
        let ms = parse_duration_ms(s)?;
        if ms == 0.0 {
            return Ok(Retention::Zero);
        }
        if ms < MIN_RETENTION_MS as f64 {
            return Err(RetentionError::TooShort(input.to_owned()));
        }
        if ms > MAX_RETENTION_MS as f64 {
            return Err(RetentionError::TooLong(input.to_owned()));
        }
        Ok(Retention::Duration {
            ms: ms.round() as i64,
        })
    }

    /// Records stamped strictly before the returned time (unix ms) are to be purged; `None`
    /// keeps everything. Zero retention purges everything up to and including `now_ms`.
    pub fn cutoff(&self, now_ms: i64) -> Option<i64> {
        match self {
            Retention::Forever => None,
            Retention::Zero => Some(now_ms.saturating_add(1)),
            Retention::Duration { ms } => Some(now_ms.saturating_sub(*ms)),
        }
    }

    /// Whether captures should be written at all (false under zero retention).
    pub fn keeps_captures(&self) -> bool {
        !matches!(self, Retention::Zero)
    }
}

/// Go `time.ParseDuration` plus `d`; negative durations are syntax errors here.
fn parse_duration_ms(s: &str) -> Result<f64, RetentionError> {
    let syntax = || RetentionError::Syntax(s.to_owned());
    let bytes = s.as_bytes();
    let mut i = 0;
    let mut total = 0.0f64;
    if bytes.is_empty() {
        return Err(syntax());
    }
    while i < bytes.len() {
        let start = i;
        while i < bytes.len() && (bytes[i].is_ascii_digit() || bytes[i] == b'.') {
            i += 1;
        }
        let number = &s[start..i];
        if number.is_empty() || number == "." || number.matches('.').count() > 1 {
            return Err(syntax());
        }
        let value: f64 = number.parse().map_err(|_| syntax())?;
        let unit_start = i;
        while i < bytes.len() && bytes[i].is_ascii_alphabetic() {
            i += 1;
        }
        let unit = &s[unit_start..i];
        let scale = match unit {
            "d" => DAY_MS as f64,
            "h" => HOUR_MS as f64,
            "m" => 60_000.0,
            "s" => 1_000.0,
            "ms" => 1.0,
            "" => return Err(syntax()),
            other => {
                return Err(RetentionError::Unit {
                    input: s.to_owned(),
                    unit: other.to_owned(),
                });
            }
        };
        total += value * scale;
        if !total.is_finite() || total > (MAX_RETENTION_MS as f64) * 1000.0 {
            return Err(RetentionError::TooLong(s.to_owned()));
        }
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_table() {
        let day = DAY_MS;
        let table: &[(&str, Result<Retention, RetentionError>)] = &[
            ("", Ok(Retention::Forever)),
            ("   ", Ok(Retention::Forever)),
            ("0", Ok(Retention::Zero)),
            ("0d", Ok(Retention::Zero)),
            ("0h", Ok(Retention::Zero)),
            ("30d", Ok(Retention::Duration { ms: 30 * day })),
            ("720h", Ok(Retention::Duration { ms: 30 * day })),
            ("1h", Ok(Retention::Duration { ms: HOUR_MS })),
            ("60m", Ok(Retention::Duration { ms: HOUR_MS })),
            ("3600s", Ok(Retention::Duration { ms: HOUR_MS })),
            ("1h30m", Ok(Retention::Duration { ms: 90 * 60_000 })),
            ("1.5h", Ok(Retention::Duration { ms: 90 * 60_000 })),
            ("1d12h", Ok(Retention::Duration { ms: 36 * HOUR_MS })),
            ("3650d", Ok(Retention::Duration { ms: 3650 * day })),
            ("59m", Err(RetentionError::TooShort("59m".into()))),
            ("1s", Err(RetentionError::TooShort("1s".into()))),
            ("3651d", Err(RetentionError::TooLong("3651d".into()))),
            ("87601h", Err(RetentionError::TooLong("87601h".into()))),
            ("30", Err(RetentionError::Syntax("30".into()))),
            ("d", Err(RetentionError::Syntax("d".into()))),
            ("-1h", Err(RetentionError::Syntax("-1h".into()))),
            ("1..5h", Err(RetentionError::Syntax("1..5h".into()))),
            ("1h 30m", Err(RetentionError::Syntax("1h 30m".into()))),
            (
                "30w",
                Err(RetentionError::Unit {
                    input: "30w".into(),
                    unit: "w".into(),
                }),
            ),
            (
                "99999999999999999999d",
                Err(RetentionError::TooLong("99999999999999999999d".into())),
            ),
        ];
        for (input, want) in table {
            assert_eq!(&Retention::parse(input), want, "{input:?}");
        }
    }

    #[test]
    fn cutoffs() {
        let now = 10 * DAY_MS;
        assert_eq!(Retention::Forever.cutoff(now), None);
        assert_eq!(Retention::Zero.cutoff(now), Some(now + 1));
        assert_eq!(
            Retention::Duration { ms: 3 * DAY_MS }.cutoff(now),
            Some(7 * DAY_MS)
        );
        // Never overflows, whatever the clock says.
        assert_eq!(
            Retention::Duration { ms: DAY_MS }.cutoff(i64::MIN),
            Some(i64::MIN)
        );
        assert_eq!(Retention::Zero.cutoff(i64::MAX), Some(i64::MAX));
        assert!(!Retention::Zero.keeps_captures());
        assert!(Retention::Forever.keeps_captures());
        assert!(Retention::Duration { ms: HOUR_MS }.keeps_captures());
    }
}
