//! The client's address. The TCP peer, unless the peer is a trusted proxy (`server.trusted_proxies`):
//! then the rightmost address in `X-Forwarded-For` that is not itself a trusted proxy. A header from
//! anyone else is ignored, since anyone can write one.

use std::net::IpAddr;

use ipnet::IpNet;
use poem::Request;

pub fn client_ip(req: &Request, trusted: &[IpNet]) -> IpAddr {
    let peer = req
        .remote_addr()
        .as_socket_addr()
        .map(|a| canonical(a.ip()))
        .unwrap_or(IpAddr::from([0, 0, 0, 0]));
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let forwarded: Vec<IpAddr> = req
        .headers()
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|part| part.trim().parse::<IpAddr>().ok())
        .map(canonical)
        .collect();
    forwarded
        .iter()
        .rev()
        .find(|ip| !is_trusted(ip))
        // Every hop trusted: the first one is the client.
        .or(forwarded.first())
        .copied()
        .unwrap_or(peer)
}

/// `::ffff:192.0.2.1` and `192.0.2.1` are one client.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_canonical(),
        v4 => v4,
    }
}
