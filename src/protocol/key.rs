//! [`RecordKey`]: the key a server files an application under, `ID @ IP`
//! (the reference's, and ours by default) or the bare id. This module is
//! the one place where the separator `" @ "` is written or split.

use std::fmt;
use std::net::IpAddr;

/// What stands between the id and the host in a record key.
pub const KEY_SEPARATOR: &str = " @ ";

/// A record key as `/list` and `/status` print it, split into the
/// application id and the host: `ID @ IP`, split on the **last** `" @ "`
/// (an id may itself contain `" @ "`, an address never does), or a bare id
/// (`host` is `None`) from a server that keys records by id alone.
///
/// ```
/// use heartbeat_sdk::protocol::RecordKey;
///
/// let key = RecordKey::parse("kiosk @ 3 @ 10.0.0.7");
/// assert_eq!((key.id(), key.host()), ("kiosk @ 3", Some("10.0.0.7")));
/// assert_eq!(key.to_string(), "kiosk @ 3 @ 10.0.0.7");
/// assert_eq!(RecordKey::parse("kiosk-3").host(), None);
/// assert_eq!(RecordKey::new("kiosk-3", Some("::1")).to_string(), "kiosk-3 @ ::1");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RecordKey<'a> {
    id: &'a str,
    host: Option<&'a str>,
}

impl<'a> RecordKey<'a> {
    /// The key of `id` from `host` (`None`: the bare id).
    pub fn new(id: &'a str, host: Option<&'a str>) -> Self {
        RecordKey { id, host }
    }

    /// Splits `key` on its last `" @ "`; without one it is a bare id.
    pub fn parse(key: &'a str) -> Self {
        match last_separator(key) {
            Some(at) => RecordKey {
                id: &key[..at],
                host: Some(&key[at + KEY_SEPARATOR.len()..]),
            },
            None => RecordKey {
                id: key,
                host: None,
            },
        }
    }

    /// The application id.
    pub fn id(&self) -> &'a str {
        self.id
    }

    /// The host text after the last `" @ "`, if any.
    pub fn host(&self) -> Option<&'a str> {
        self.host
    }

    /// The host, when it is an IP address (as every key our server makes).
    pub fn host_ip(&self) -> Option<IpAddr> {
        self.host.and_then(|host| host.parse().ok())
    }
}

impl fmt::Display for RecordKey<'_> {
    /// `ID @ HOST`, or the bare id.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.id)?;
        if let Some(host) = self.host {
            f.write_str(KEY_SEPARATOR)?;
            f.write_str(host)?;
        }
        Ok(())
    }
}

/// Where the last `" @ "` of `key` starts: `str::rfind` of it, by a scan
/// from the end (a host is short), without setting up a string searcher
/// for every key of a `/metrics` scrape.
fn last_separator(key: &str) -> Option<usize> {
    let b = key.as_bytes();
    (0..b.len().saturating_sub(2))
        .rev()
        .find(|&at| b[at] == b' ' && b[at + 1] == b'@' && b[at + 2] == b' ')
}

/// The key of a record as `/list` prints it, split on its **last** `" @ "`:
/// the id and the host (`None` when the server keys records by the bare id).
/// The same as [`RecordKey::parse`], as a pair.
///
/// ```
/// use heartbeat_sdk::protocol::split_key;
/// assert_eq!(split_key("kiosk @ 3 @ 10.0.0.7"), ("kiosk @ 3", Some("10.0.0.7")));
/// assert_eq!(split_key("kiosk-3"), ("kiosk-3", None));
/// ```
pub fn split_key(key: &str) -> (&str, Option<&str>) {
    let key = RecordKey::parse(key);
    (key.id(), key.host())
}

/// `ID @ IP` for `app` from `peer` (an IPv4-mapped IPv6 address written as
/// the IPv4 one), as the server files it. Without the formatting machinery
/// for IPv4: `format!` was half the cost of a ping (benches/registry.rs).
#[cfg(monitor)]
pub(crate) fn peer_key(app: &str, peer: IpAddr) -> String {
    let mut key = String::with_capacity(app.len() + KEY_SEPARATOR.len() + 39);
    key.push_str(app);
    key.push_str(KEY_SEPARATOR);
    match peer.to_canonical() {
        IpAddr::V4(ip) => push_ipv4(&mut key, ip),
        ip @ IpAddr::V6(_) => {
            use fmt::Write as _;
            // Writing to a String cannot fail.
            let _ = write!(key, "{ip}");
        }
    }
    key
}

/// Appends `ip` in dotted-decimal form, as its `Display` does.
#[cfg(monitor)]
fn push_ipv4(out: &mut String, ip: std::net::Ipv4Addr) {
    for (i, octet) in ip.octets().into_iter().enumerate() {
        if i > 0 {
            out.push('.');
        }
        if octet >= 100 {
            out.push(char::from(b'0' + octet / 100));
        }
        if octet >= 10 {
            out.push(char::from(b'0' + octet / 10 % 10));
        }
        out.push(char::from(b'0' + octet % 10));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_separator_is_rfinds() {
        for key in [
            "",
            " ",
            " @",
            " @ ",
            "@ ",
            "a @ b",
            " @ @ x",
            "a @ b @ c",
            "a  @  b",
            "é @ ::1",
            "x@y",
            "k @ ",
            " @ k",
            "a @@ b @ @ c",
        ] {
            assert_eq!(last_separator(key), key.rfind(KEY_SEPARATOR), "{key:?}");
            assert_eq!(
                split_key(key),
                match key.rsplit_once(KEY_SEPARATOR) {
                    Some((id, host)) => (id, Some(host)),
                    None => (key, None),
                },
                "{key:?}"
            );
        }
    }
    use std::net::{Ipv4Addr, Ipv6Addr};

    #[test]
    #[cfg(monitor)]
    fn peer_keys_are_what_display_writes() {
        for ip in [
            Ipv4Addr::new(0, 0, 0, 0),
            Ipv4Addr::new(9, 10, 99, 100),
            Ipv4Addr::new(255, 255, 255, 255),
            Ipv4Addr::new(10, 0, 0, 7),
        ] {
            assert_eq!(peer_key("a", IpAddr::V4(ip)), format!("a @ {ip}"));
        }
        let mapped = IpAddr::V6(Ipv4Addr::new(1, 2, 3, 4).to_ipv6_mapped());
        assert_eq!(peer_key("a", mapped), "a @ 1.2.3.4");
        assert_eq!(peer_key("a", IpAddr::V6(Ipv6Addr::LOCALHOST)), "a @ ::1");
    }

    #[test]
    fn keys_round_trip_and_split_on_the_last_separator() {
        for text in ["a @ b @ 1.2.3.4", "a", "x @ ::1", " @ 1.2.3.4"] {
            assert_eq!(RecordKey::parse(text).to_string(), text);
        }
        let key = RecordKey::parse("a @ b @ 1.2.3.4");
        assert_eq!(key.id(), "a @ b");
        assert_eq!(key.host_ip(), Some(IpAddr::V4(Ipv4Addr::new(1, 2, 3, 4))));
        assert_eq!(RecordKey::parse("a @ nohost").host_ip(), None);
        assert_eq!(split_key("a"), ("a", None));
    }
}
