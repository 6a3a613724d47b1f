//! The process's share of the operating system's network limits: a listen backlog deep enough
//! for a burst of new connections, and as many open files as the system allows.

use std::io;
use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpSocket};

/// Connections the kernel completes and holds for `accept` (capped by `net.core.somaxconn`,
/// 4096 by default on current Linux). tokio's `TcpListener::bind` asks for 1024: when thousands
/// of clients connect at once (agents reconnecting after a restart, a load test) and the accept
/// loop falls behind, a full queue makes the kernel drop handshakes or answer with SYN cookies,
/// and a cookie that fails validation ends the client's connection with a reset.
pub const LISTEN_BACKLOG: u32 = 4096;

/// A TCP listener on `addr` with [`LISTEN_BACKLOG`] (and `SO_REUSEADDR`, as tokio's own `bind`
/// sets it, so a restart does not wait for the old connections' `TIME_WAIT`). Must be called
/// within a tokio runtime.
pub fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Raise the soft limit on open files to the hard limit and return the limit in force. Every
/// client connection holds a socket and usually an upstream one too, so the common soft default
/// of 1024 (systemd's for services) would turn away a gateway's ~500th concurrent stream with
/// "too many open files"; the hard limit is the administrator's actual bound. `None` for
/// unlimited.
pub fn raise_nofile_limit() -> Option<u64> {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let cur = getrlimit(Resource::Nofile);
    if cur.current != cur.maximum {
        // Failure leaves the soft limit as it was, which the caller reports.
        let _ = setrlimit(
            Resource::Nofile,
            Rlimit {
                current: cur.maximum,
                maximum: cur.maximum,
            },
        );
    }
    getrlimit(Resource::Nofile).current
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Every connection of a burst larger than tokio's default backlog (1024) is held for
    /// `accept` while nothing accepts: with the default, the ones past the queue would be
    /// dropped or handed SYN cookies and never be accepted (none of them sends a byte that would
    /// complete them later).
    #[tokio::test]
    async fn a_burst_beyond_the_default_backlog_is_held_for_accept() {
        let limit = raise_nofile_limit().unwrap_or(u64::MAX);
        let somaxconn: usize = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(4096);
        // More than 1024 where the system allows it (the queue holds backlog + 1).
        let burst = 1100.min(somaxconn);
        assert!(
            limit >= burst as u64 + 64,
            "the test needs {} open files, the hard limit is {limit}",
            burst + 64
        );
        let listener = bind(([127, 0, 0, 1], 0).into()).unwrap();
        let addr = listener.local_addr().unwrap();
        let mut clients = Vec::with_capacity(burst);
        for _ in 0..burst {
            let c = tokio::time::timeout(
                Duration::from_secs(10),
                tokio::net::TcpStream::connect(addr),
            )
            .await
            .expect("connect timed out: the listen queue is full and nothing accepts")
            .expect("connect failed");
            clients.push(c);
        }
        let mut accepted = 0;
        while accepted < burst {
            match tokio::time::timeout(Duration::from_secs(2), listener.accept()).await {
                Ok(Ok(_)) => accepted += 1,
                Ok(Err(e)) => panic!("accept failed after {accepted}: {e}"),
                Err(_) => break,
            }
        }
        assert_eq!(accepted, burst, "connections lost from the listen queue");
    }

    #[test]
    fn the_soft_file_limit_is_raised_to_the_hard_one() {
        use rustix::process::{Resource, getrlimit};
        let got = raise_nofile_limit();
        let now = getrlimit(Resource::Nofile);
        assert_eq!(got, now.current);
        assert_eq!(now.current, now.maximum);
    }
}
