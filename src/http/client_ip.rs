//! The client's address. The TCP peer, unless the peer is a trusted proxy (`server.trusted_proxies`):
//! then `X-Forwarded-For` is read from the right, skipping trusted proxies, and the client is the first
//! address that is not one. A header from anyone else is ignored, since anyone can write one.
//!
//! An entry is an address, with or without a port: `192.0.2.1`, `192.0.2.1:443`, `2001:db8::1`,
//! `[2001:db8::1]`, `[2001:db8::1]:443`; `::ffff:192.0.2.1` is `192.0.2.1`; empty entries are skipped
//! (RFC 9110 §5.6.1). Anything else (`unknown`, an obfuscated name, junk) ends the walk, as nothing left of
//! it can be tied to a trusted hop: the client is then the last trusted hop read, the proxy that could not
//! name its own client (the peer, if the junk is the rightmost entry). When every entry is a trusted
//! proxy, the client is the leftmost.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use ipnet::IpNet;
use poem::Request;

pub fn client_ip(req: &Request, trusted: &[IpNet]) -> IpAddr {
    let peer = req
        .remote_addr()
        .as_socket_addr()
        .map_or(IpAddr::from([0, 0, 0, 0]), |a| a.ip().to_canonical());
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let values = req.headers().get_all("x-forwarded-for");
    forwarded_client(peer, values.iter().map(|v| v.as_bytes()), is_trusted)
}

/// The client behind the trusted `peer`, from the `X-Forwarded-For` values in the order they came.
fn forwarded_client<'a>(
    peer: IpAddr,
    values: impl DoubleEndedIterator<Item = &'a [u8]>,
    is_trusted: impl Fn(&IpAddr) -> bool,
) -> IpAddr {
    let mut last_trusted = peer;
    for entry in values.rev().flat_map(|v| v.rsplit(|&b| b == b',')) {
        let entry = entry.trim_ascii();
        if entry.is_empty() {
            continue;
        }
        let Some(ip) = parse_entry(entry) else {
            return last_trusted;
        };
        if !is_trusted(&ip) {
            return ip;
        }
        last_trusted = ip;
    }
    last_trusted
}

/// One entry's address, whatever port it carries; `None` for anything that is not an address.
fn parse_entry(entry: &[u8]) -> Option<IpAddr> {
    let s = std::str::from_utf8(entry).ok()?;
    let ip = s
        .parse::<IpAddr>()
        .ok()
        .or_else(|| s.parse::<SocketAddr>().ok().map(|a| a.ip()))
        .or_else(|| {
            let bracketed = s.strip_prefix('[')?.strip_suffix(']')?;
            bracketed.parse::<Ipv6Addr>().ok().map(IpAddr::V6)
        })?;
    Some(ip.to_canonical())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// The client behind the proxy 127.0.0.1, with 10.0.0.0/8 trusted too, for these header values.
    fn client(values: &[&str]) -> IpAddr {
        let trusted: [IpNet; 2] = [
            "127.0.0.1/32".parse().unwrap(),
            "10.0.0.0/8".parse().unwrap(),
        ];
        forwarded_client(ip("127.0.0.1"), values.iter().map(|v| v.as_bytes()), |ip| {
            trusted.iter().any(|net| net.contains(ip))
        })
    }

    #[test]
    fn an_entry_is_its_address_with_or_without_a_port_or_brackets() {
        for (entry, want) in [
            ("192.0.2.1", "192.0.2.1"),
            ("192.0.2.1:443", "192.0.2.1"),
            ("2001:db8::1", "2001:db8::1"),
            ("[2001:db8::1]", "2001:db8::1"),
            ("[2001:db8::1]:443", "2001:db8::1"),
            ("::ffff:192.0.2.1", "192.0.2.1"),
            ("[::ffff:192.0.2.1]:8080", "192.0.2.1"),
        ] {
            assert_eq!(parse_entry(entry.as_bytes()), Some(ip(want)), "{entry}");
        }
    }

    #[test]
    fn anything_else_is_not_an_address() {
        for junk in [
            "unknown",
            "_hidden",
            "example.com",
            "192.0.2.1:",
            "192.0.2.1:99999",
            "192.0.2.1:http",
            "2001:db8::1:443:",
            "[2001:db8::1",
            "2001:db8::1]",
            "[192.0.2.1]",
            "[2001:db8::1]:",
            "192.0.2",
            "\u{ff}",
        ] {
            assert_eq!(parse_entry(junk.as_bytes()), None, "{junk}");
        }
        assert_eq!(parse_entry(b"\xff\xfe"), None);
    }

    #[test]
    fn the_client_is_the_rightmost_entry_that_is_not_a_trusted_proxy() {
        assert_eq!(client(&[]), ip("127.0.0.1"));
        assert_eq!(client(&["198.51.100.1"]), ip("198.51.100.1"));
        assert_eq!(
            client(&["203.0.113.9, 198.51.100.1:5678, 10.1.2.3:443"]),
            ip("198.51.100.1")
        );
        // Several header lines are one list, in order.
        assert_eq!(
            client(&["203.0.113.9", "198.51.100.1, 10.0.0.1", "10.0.0.2"]),
            ip("198.51.100.1")
        );
        // Empty entries are skipped.
        assert_eq!(client(&["198.51.100.1, , 10.0.0.1,"]), ip("198.51.100.1"));
        // Every entry trusted: the leftmost.
        assert_eq!(client(&["10.0.0.9, 10.0.0.1"]), ip("10.0.0.9"));
        // A mapped address is the IPv4 address, trusted or not.
        assert_eq!(
            client(&["::ffff:198.51.100.1, ::ffff:10.0.0.1"]),
            ip("198.51.100.1")
        );
    }

    #[test]
    fn junk_stops_the_walk_at_the_last_trusted_hop() {
        assert_eq!(client(&["203.0.113.9, unknown"]), ip("127.0.0.1"));
        assert_eq!(
            client(&["203.0.113.9, unknown, 10.0.0.7:1234"]),
            ip("10.0.0.7")
        );
        assert_eq!(client(&["203.0.113.9", "junk", "10.0.0.7"]), ip("10.0.0.7"));
        // Junk left of the client does not matter.
        assert_eq!(client(&["junk, 198.51.100.1"]), ip("198.51.100.1"));
    }

    #[test]
    fn many_entries_are_walked_from_the_right() {
        let spoofed = vec!["203.0.113.1"; 10_000].join(", ");
        let header = format!("{spoofed}, 198.51.100.1, 10.0.0.1");
        assert_eq!(client(&[&header]), ip("198.51.100.1"));
        let trusted = vec!["10.0.0.1"; 10_000].join(",");
        assert_eq!(
            client(&[&format!("198.51.100.1,{trusted}")]),
            ip("198.51.100.1")
        );
    }
}
