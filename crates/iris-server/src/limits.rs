//! Counting failed iris-key attempts per client address, so keys cannot be guessed at speed.
//!
//! A fixed one-minute window per address; the table is bounded (the oldest windows are dropped
//! first when it is full), so a flood of addresses cannot grow memory without bound.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

const WINDOW_MS: i64 = 60_000;
const MAX_ADDRESSES: usize = 16_384;

#[derive(Debug, Default)]
pub struct FailureCounter {
    table: Mutex<HashMap<IpAddr, (i64, usize)>>,
}

impl FailureCounter {
    /// Whether `ip` used up its failures in the current window.
    pub fn blocked(&self, ip: IpAddr, limit: usize) -> bool {
        let now = iris_store::now_ms();
        let Ok(t) = self.table.lock() else {
            return false;
        };
        t.get(&ip)
            .is_some_and(|&(start, n)| now - start < WINDOW_MS && n >= limit)
    }

    pub fn failed(&self, ip: IpAddr) {
        let now = iris_store::now_ms();
        let Ok(mut t) = self.table.lock() else { return };
        if t.len() >= MAX_ADDRESSES && !t.contains_key(&ip) {
            t.retain(|_, (start, _)| now - *start < WINDOW_MS);
            if t.len() >= MAX_ADDRESSES {
                t.clear();
            }
        }
        let e = t.entry(ip).or_insert((now, 0));
        if now - e.0 >= WINDOW_MS {
            *e = (now, 0);
        }
        e.1 += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_after_the_limit() {
        let c = FailureCounter::default();
        let ip: IpAddr = "127.0.0.9".parse().unwrap();
        for _ in 0..3 {
            assert!(!c.blocked(ip, 3));
            c.failed(ip);
        }
        assert!(c.blocked(ip, 3));
        assert!(!c.blocked("127.0.0.8".parse().unwrap(), 3));
    }

    #[test]
    fn the_table_stays_bounded() {
        let c = FailureCounter::default();
        for i in 0..(MAX_ADDRESSES as u32 + 10) {
            c.failed(IpAddr::from(i.to_be_bytes()));
        }
        assert!(c.table.lock().unwrap().len() <= MAX_ADDRESSES);
    }
}
