//! Addresses and prefixes as the CIB stores them: splitting and matching,
//! no errors (the checks with messages are in `validate`). Used by the types,
//! the input checks and the flow lookup alike.

use std::net::IpAddr;

/// Splits `host:port` / `[v6]:port`; `None` when it is not of that shape.
pub(crate) fn split_host_port(address: &str) -> Option<(&str, &str)> {
    if let Some(rest) = address.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        let port = after.strip_prefix(':')?;
        return Some((host, port));
    }
    let (host, port) = address.rsplit_once(':')?;
    if host.contains(':') {
        return None; // a bare IPv6 literal needs brackets
    }
    Some((host, port))
}

/// An address or `address/prefix-length`.
pub(crate) fn parse_prefix(value: &str) -> Option<(IpAddr, u8)> {
    let (addr, len) = match value.split_once('/') {
        Some((a, l)) => (a.parse::<IpAddr>().ok()?, Some(l.parse::<u8>().ok()?)),
        None => (value.parse::<IpAddr>().ok()?, None),
    };
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let len = len.unwrap_or(max);
    (len <= max).then_some((addr, len))
}

/// Whether `addr` lies in `prefix` (an address or prefix as stored).
pub(crate) fn prefix_contains(prefix: &str, addr: IpAddr) -> bool {
    let Some((net, len)) = parse_prefix(prefix) else {
        return false;
    };
    match (net, addr) {
        (IpAddr::V4(n), IpAddr::V4(a)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
            u32::from(n) & mask == u32::from(a) & mask
        }
        (IpAddr::V6(n), IpAddr::V6(a)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
            u128::from(n) & mask == u128::from(a) & mask
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_contain_their_addresses() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(prefix_contains("10.0.0.0/8", ip("10.1.2.3")));
        assert!(!prefix_contains("10.0.0.0/8", ip("11.1.2.3")));
        assert!(prefix_contains("0.0.0.0/0", ip("11.1.2.3")));
        assert!(prefix_contains("192.0.2.7", ip("192.0.2.7")));
        assert!(prefix_contains("2001:db8::/32", ip("2001:db8:1::5")));
        assert!(!prefix_contains("2001:db8::/32", ip("10.0.0.1")));
        assert!(parse_prefix("10.0.0.0/33").is_none());
    }
}
