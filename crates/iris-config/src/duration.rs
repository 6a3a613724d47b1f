//! Durations written as strings: `"250ms"`, `"10s"`, `"5m"`, `"1h"`, `"1h30m"`, `"1.5s"`, `"0"`.

use std::time::Duration;

/// Why a duration string did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("empty duration: write a number and a unit, like \"10s\"")]
    Empty,
    #[error(
        "invalid duration {0:?}: write numbers with units ms, s, m or h, like \"250ms\", \"10s\", \"5m\", \"1h30m\""
    )]
    Invalid(String),
    #[error("duration {0:?} is too large")]
    TooLarge(String),
}

const NANOS_PER_MS: u128 = 1_000_000;
const NANOS_PER_S: u128 = 1_000 * NANOS_PER_MS;

/// Parses a duration: one or more `<number><unit>` parts (Go style, no spaces), where the number
/// may have a fraction (`1.5s`) and the unit is `ms`, `s`, `m` or `h`. `"0"` alone means zero.
pub fn parse_duration(s: &str) -> Result<Duration, DurationError> {
    if s.is_empty() {
        return Err(DurationError::Empty);
    }
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let invalid = || DurationError::Invalid(s.to_owned());
    let too_large = || DurationError::TooLarge(s.to_owned());
    let mut total: u128 = 0;
    let mut rest = s;
    while !rest.is_empty() {
        let int_len = rest.bytes().take_while(u8::is_ascii_digit).count();
        let int_digits = &rest[..int_len];
        rest = &rest[int_len..];
        let mut frac_digits = "";
        if let Some(after_dot) = rest.strip_prefix('.') {
            let frac_len = after_dot.bytes().take_while(u8::is_ascii_digit).count();
            frac_digits = &after_dot[..frac_len];
            rest = &after_dot[frac_len..];
            if frac_len == 0 {
                return Err(invalid());
            }
        }
        if int_digits.is_empty() && frac_digits.is_empty() {
            return Err(invalid());
        }
        let (unit, after_unit) = if let Some(r) = rest.strip_prefix("ms") {
            (NANOS_PER_MS, r)
        } else if let Some(r) = rest.strip_prefix('s') {
            (NANOS_PER_S, r)
        } else if let Some(r) = rest.strip_prefix('m') {
            (60 * NANOS_PER_S, r)
        } else if let Some(r) = rest.strip_prefix('h') {
            (3600 * NANOS_PER_S, r)
        } else {
            return Err(invalid());
        };
        rest = after_unit;

        let int: u128 = if int_digits.is_empty() {
            0
        } else {
            int_digits.parse().map_err(|_| too_large())?
        };
        let mut part = int.checked_mul(unit).ok_or_else(too_large)?;
        // Fraction digits beyond nanosecond precision of an hour cannot matter; ignore them.
        let frac_digits = &frac_digits[..frac_digits.len().min(15)];
        if !frac_digits.is_empty() {
            let frac: u128 = frac_digits.parse().map_err(|_| invalid())?;
            let scale = 10u128.pow(u32::try_from(frac_digits.len()).map_err(|_| invalid())?);
            part = part
                .checked_add(frac * unit / scale)
                .ok_or_else(too_large)?;
        }
        total = total.checked_add(part).ok_or_else(too_large)?;
    }
    let secs = u64::try_from(total / NANOS_PER_S).map_err(|_| too_large())?;
    let nanos = u32::try_from(total % NANOS_PER_S).map_err(|_| too_large())?;
    Ok(Duration::new(secs, nanos))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_durations() {
        let cases = [
            ("0", Duration::ZERO),
            ("0s", Duration::ZERO),
            ("250ms", Duration::from_millis(250)),
            ("10s", Duration::from_secs(10)),
            ("5m", Duration::from_secs(300)),
            ("1h", Duration::from_secs(3600)),
            ("1h30m", Duration::from_secs(5400)),
            ("1m30s500ms", Duration::from_millis(90_500)),
            ("1.5s", Duration::from_millis(1500)),
            (".5s", Duration::from_millis(500)),
            ("0.25h", Duration::from_secs(900)),
            ("300s", Duration::from_secs(300)),
        ];
        for (input, want) in cases {
            assert_eq!(parse_duration(input), Ok(want), "input {input:?}");
        }
    }

    #[test]
    fn invalid_durations() {
        for input in [
            "10", "s", "10x", "1.s", "-1s", " 1s", "1s ", "1 s", "1d", "1.5",
        ] {
            assert_eq!(
                parse_duration(input),
                Err(DurationError::Invalid(input.to_owned())),
                "input {input:?}"
            );
        }
        assert_eq!(parse_duration(""), Err(DurationError::Empty));
        assert!(matches!(
            parse_duration("99999999999999999999999999999999999999999h"),
            Err(DurationError::TooLarge(_))
        ));
        assert!(matches!(
            parse_duration("9999999999999999h"),
            Err(DurationError::TooLarge(_))
        ));
    }
}
