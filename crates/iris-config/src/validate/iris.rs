//! The `"iris"` section: iris's own settings. Absent fields keep their defaults.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::{Fields, array, boolean, object, string, unsigned};
use crate::diagnostic::{Diags, Path, quote};
use crate::duration::parse_duration;
use crate::raw::Raw;
use crate::types::{IdentitySettings, IrisSettings, Timeouts, UsageSettings};

const MIN_BODY_BYTES: u64 = 1024;

pub(super) fn iris(raw: &Raw, path: &Path, d: &mut Diags) -> IrisSettings {
    let mut s = IrisSettings::default();
    let Some(entries) = object(raw, path, d) else {
        return s;
    };
    let mut f = Fields::new(entries, path);
    if let Some((raw, path)) = f.get("listen")
        && let Some(text) = string(raw, &path, d)
    {
        match text.parse::<SocketAddr>() {
                Ok(addr) => s.listen = addr,
                Err(_) => d.error(
                    &path,
                    format!(
                        "invalid listen address {}: expected an IP address and port, like \"127.0.0.1:4747\" or \"[::1]:4747\"",
                        quote(text)
                    ),
                ),
            }
    }
    if let Some((raw, path)) = f.get("data_dir") {
        s.data_dir = non_empty_path(raw, &path, d);
    }
    if let Some((raw, path)) = f.get("identity") {
        s.identity = identity(raw, &path, d);
    }
    if let Some((raw, path)) = f.get("limits")
        && let Some(entries) = object(raw, &path, d)
    {
        let mut limits = Fields::new(entries, &path);
        if let Some((raw, path)) = limits.get("max_body_bytes")
            && let Some(n) = unsigned(raw, &path, d)
        {
            if n < MIN_BODY_BYTES {
                d.error(&path, format!("must be at least {MIN_BODY_BYTES}"));
            } else {
                match usize::try_from(n) {
                    Ok(n) => s.max_body_bytes = n,
                    Err(_) => d.error(&path, "too large for this platform"),
                }
            }
        }
        s.max_connections = count(&mut limits, "max_connections", s.max_connections, d);
        s.key_failures_per_minute = count(
            &mut limits,
            "key_failures_per_minute",
            s.key_failures_per_minute,
            d,
        );
        limits.finish(d);
    }
    if let Some((raw, path)) = f.get("timeouts") {
        s.timeouts = timeouts(raw, &path, d);
    }
    if let Some((raw, path)) = f.get("usage") {
        s.usage = usage(raw, &path, d);
    }
    if let Some((raw, path)) = f.get("browser_hosts")
        && let Some(items) = array(raw, &path, d)
    {
        for (i, it) in items.iter().enumerate() {
            let p = path.index(i);
            let Some(h) = string(it, &p, d) else { continue };
            let h = h.trim().trim_end_matches('.').to_ascii_lowercase();
            let ok = !h.is_empty()
                && h.len() <= 253
                && h.split('.').all(|label| {
                    !label.is_empty()
                        && label.len() <= 63
                        && label
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                });
            if ok {
                s.browser_hosts.push(h);
            } else {
                d.error(
                    &p,
                    "expected a DNS host name without scheme, port or path, like \"ai.example.com\"",
                );
            }
        }
    }
    if let Some((raw, path)) = f.get("captures")
        && let Some(entries) = object(raw, &path, d)
    {
        let mut c = Fields::new(entries, &path);
        if let Some(b) = c
            .get("enabled")
            .and_then(|(raw, path)| boolean(raw, &path, d))
        {
            s.captures.enabled = b;
        }
        s.captures.max_body_bytes = count(&mut c, "max_body_bytes", s.captures.max_body_bytes, d);
        s.captures.max_raw_events_bytes = count(
            &mut c,
            "max_raw_events_bytes",
            s.captures.max_raw_events_bytes,
            d,
        );
        s.captures.max_in_flight_bytes = count(
            &mut c,
            "max_in_flight_bytes",
            s.captures.max_in_flight_bytes,
            d,
        );
        if let Some((raw, path)) = c.get("redact_headers")
            && let Some(items) = array(raw, &path, d)
        {
            for (i, it) in items.iter().enumerate() {
                if let Some(h) = string(it, &path.index(i), d) {
                    s.captures.redact_headers.push(h.to_ascii_lowercase());
                }
            }
        }
        c.finish(d);
    }
    f.finish(d);
    s
}

fn non_empty_path(raw: &Raw, path: &Path, d: &mut Diags) -> Option<PathBuf> {
    let text = string(raw, path, d)?;
    if text.is_empty() {
        d.error(path, "path is empty");
        return None;
    }
    Some(PathBuf::from(text))
}

fn identity(raw: &Raw, path: &Path, d: &mut Diags) -> IdentitySettings {
    let mut s = IdentitySettings::default();
    let Some(entries) = object(raw, path, d) else {
        return s;
    };
    let mut f = Fields::new(entries, path);
    let mut flag = |key: &'static str, value: &mut bool, d: &mut Diags| {
        if let Some(b) = f.get(key).and_then(|(raw, path)| boolean(raw, &path, d)) {
            *value = b;
        }
    };
    flag("whois", &mut s.whois, d);
    flag("serve_headers", &mut s.serve_headers, d);
    flag("keys", &mut s.keys, d);
    flag("loopback", &mut s.loopback, d);
    if let Some((raw, path)) = f.get("tailscale_socket") {
        s.tailscale_socket = non_empty_path(raw, &path, d);
    }
    f.finish(d);
    if !(s.whois || s.serve_headers || s.keys || s.loopback) {
        d.warn(
            path,
            "every identity source is disabled; every request will be denied",
        );
    }
    s
}

/// A positive duration field; keeps `default` when absent or invalid.
fn duration(f: &mut Fields<'_>, key: &'static str, default: Duration, d: &mut Diags) -> Duration {
    let Some((raw, path)) = f.get(key) else {
        return default;
    };
    let Some(text) = string(raw, &path, d) else {
        return default;
    };
    match parse_duration(text) {
        Ok(value) if value.is_zero() => {
            d.error(&path, "must be greater than zero");
            default
        }
        Ok(value) => value,
        Err(e) => {
            d.error(&path, e.to_string());
            default
        }
    }
}

fn timeouts(raw: &Raw, path: &Path, d: &mut Diags) -> Timeouts {
    let defaults = Timeouts::default();
    let Some(entries) = object(raw, path, d) else {
        return defaults;
    };
    let mut f = Fields::new(entries, path);
    let t = Timeouts {
        connect: duration(&mut f, "connect", defaults.connect, d),
        first_byte: duration(&mut f, "first_byte", defaults.first_byte, d),
        idle: duration(&mut f, "idle", defaults.idle, d),
        client_header: duration(&mut f, "client_header", defaults.client_header, d),
        request_body: duration(&mut f, "request_body", defaults.request_body, d),
        shutdown_drain: duration(&mut f, "shutdown_drain", defaults.shutdown_drain, d),
    };
    f.finish(d);
    t
}

/// A count that must be at least 1; keeps `default` when absent or invalid.
fn count(f: &mut Fields<'_>, key: &'static str, default: usize, d: &mut Diags) -> usize {
    let Some((raw, path)) = f.get(key) else {
        return default;
    };
    match unsigned(raw, &path, d) {
        Some(0) => {
            d.error(&path, "must be at least 1");
            default
        }
        Some(n) => match usize::try_from(n) {
            Ok(n) => n,
            Err(_) => {
                d.error(&path, "too large for this platform");
                default
            }
        },
        None => default,
    }
}

fn usage(raw: &Raw, path: &Path, d: &mut Diags) -> UsageSettings {
    let defaults = UsageSettings::default();
    let Some(entries) = object(raw, path, d) else {
        return defaults;
    };
    let mut f = Fields::new(entries, path);
    let u = UsageSettings {
        flush_interval: duration(&mut f, "flush_interval", defaults.flush_interval, d),
        queue_capacity: count(&mut f, "queue_capacity", defaults.queue_capacity, d),
        batch_size: count(&mut f, "batch_size", defaults.batch_size, d),
    };
    f.finish(d);
    u
}
