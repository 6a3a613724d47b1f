//! Per-connection state.

use std::net::SocketAddr;
use std::sync::Arc;

use iris_identity::Principal;
use iris_policy::TailnetGrants;
use tokio::sync::OnceCell;

/// A tailnet identity resolved by WhoIs, with its tailnet-policy grants compiled.
#[derive(Debug)]
pub struct TailnetIdentity {
    pub principal: Arc<Principal>,
    pub grants: TailnetGrants,
}

/// What is known about one client connection. WhoIs is asked once per connection (lazily, on its
/// first request) and the answer dies with the connection, so a reused port can never inherit
/// another peer's identity.
#[derive(Debug)]
pub struct ConnCtx {
    pub peer: SocketAddr,
    pub local: SocketAddr,
    /// A connection on the break-glass admin socket.
    pub local_admin: bool,
    pub(crate) whois: OnceCell<Option<Arc<TailnetIdentity>>>,
}

impl ConnCtx {
    pub fn new(peer: SocketAddr, local: SocketAddr) -> ConnCtx {
        ConnCtx {
            peer,
            local,
            local_admin: false,
            whois: OnceCell::new(),
        }
    }

    /// A connection on the break-glass admin socket (no network peer).
    pub fn local_admin() -> ConnCtx {
        let none = SocketAddr::from(([0, 0, 0, 0], 0));
        ConnCtx {
            peer: none,
            local: none,
            local_admin: true,
            whois: OnceCell::new(),
        }
    }

    pub fn peer_is_loopback(&self) -> bool {
        self.peer.ip().is_loopback()
            || matches!(self.peer.ip(), std::net::IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback()))
    }
}
