//! Where load may go: only servers on this machine (127.0.0.0/8 or ::1).
//! A load tool pointed at someone else's address by a typo is a flood, so
//! every address is checked after resolution, before anything is sent.

use std::net::{SocketAddr, ToSocketAddrs};

use anyhow::{Context, bail};
use redis::ConnectionAddr;

/// Resolves `host:port` and refuses it unless every address it names is a
/// loopback address.
pub fn loopback(target: &str) -> anyhow::Result<SocketAddr> {
    let addrs: Vec<SocketAddr> =
        target.to_socket_addrs().with_context(|| format!("cannot resolve `{target}` (expected host:port)"))?.collect();
    if let Some(other) = addrs.iter().find(|a| !a.ip().is_loopback()) {
        bail!(
            "refusing `{target}`: it resolves to {other}, which is not a loopback address; \
             herald-load only loads servers on this machine (127.0.0.0/8 or ::1)"
        );
    }
    // Prefer IPv4: Herald's default listen address is 127.0.0.1.
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or(addrs.first())
        .copied()
        .with_context(|| format!("`{target}` resolves to no address"))
}

/// Parses a Redis URL and refuses it unless it points at this machine.
pub fn loopback_redis(url: &str) -> anyhow::Result<redis::Client> {
    let client = redis::Client::open(url).with_context(|| format!("cannot parse the Redis URL `{url}`"))?;
    match client.get_connection_info().addr() {
        ConnectionAddr::Tcp(host, port) | ConnectionAddr::TcpTls { host, port, .. } => {
            let host = if host.contains(':') && !host.starts_with('[') { format!("[{host}]") } else { host.clone() };
            loopback(&format!("{host}:{port}"))?;
        }
        ConnectionAddr::Unix(_) => {} // a local socket by definition
        other => bail!("refusing the Redis address {other:?}: not a loopback TCP address"),
    }
    Ok(client)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_addresses_pass() {
        assert_eq!(loopback("127.0.0.1:8080").unwrap(), "127.0.0.1:8080".parse().unwrap());
        assert!(loopback("127.3.2.1:1").is_ok());
        assert!(loopback("[::1]:80").is_ok());
        assert!(loopback("localhost:80").is_ok());
        for other in ["10.0.0.1:80", "192.168.1.1:80", "8.8.8.8:53", "0.0.0.0:80"] {
            let e = loopback(other).unwrap_err().to_string();
            assert!(e.contains("not a loopback address"), "{other}: {e}");
        }
        assert!(loopback("127.0.0.1").is_err(), "a port is required");
    }

    #[test]
    fn redis_urls_are_checked_too() {
        assert!(loopback_redis("redis://127.0.0.1:6379").is_ok());
        assert!(loopback_redis("redis://localhost:6400/0").is_ok());
        assert!(loopback_redis("redis://10.1.2.3:6379").is_err());
    }
}
