//! Socket facts the tapped processes leave out of the socket table (their
//! own address, the thread's and the process's names): each would cost a
//! system call or a copy on their data path, so the agent reads them from
//! /proc when `get` asks. Parsing is
//! pure and tested on text; only the two `read_*` helpers touch files.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

/// The local address of descriptor `fd` of process `pid`, a TCP (`stream`)
/// or UDP socket; `None` if it is gone or not readable.
pub fn local_address(pid: u32, fd: i32, stream: bool) -> Option<SocketAddr> {
    let link = std::fs::read_link(format!("/proc/{pid}/fd/{fd}")).ok()?;
    let inode = socket_inode(link.to_str()?)?;
    let tables: [&str; 2] = if stream {
        ["tcp", "tcp6"]
    } else {
        ["udp", "udp6"]
    };
    tables.iter().find_map(|t| {
        let text = std::fs::read_to_string(format!("/proc/{pid}/net/{t}")).ok()?;
        local_of_inode(&text, inode)
    })
}

/// What /proc says about descriptor `fd` of process `pid`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Socket {
    /// A socket, with its inode.
    Open(u64),
    /// Closed, not a socket, or the process is gone.
    Gone,
    /// Not ours to look at (another user's process, for a non-root agent).
    Unknown,
}

/// Whether process `pid` holds a socket on descriptor `fd`.
pub fn socket_of(pid: u32, fd: i32) -> Socket {
    if pid == 0 || fd < 0 {
        return Socket::Gone;
    }
    match std::fs::read_link(format!("/proc/{pid}/fd/{fd}")) {
        Ok(link) => link
            .to_str()
            .and_then(socket_inode)
            .map_or(Socket::Gone, Socket::Open),
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => Socket::Unknown,
        Err(_) => Socket::Gone,
    }
}

/// The name of thread `tid` of process `pid`, if it still runs.
pub fn thread_name(pid: u32, tid: u32) -> Option<String> {
    if tid == 0 {
        return None;
    }
    let text = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/comm")).ok()?;
    Some(text.trim_end_matches('\n').to_owned())
}

/// The name of process `pid` (its main thread's), if it still runs.
pub fn process_name(pid: u32) -> Option<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
    Some(text.trim_end_matches('\n').to_owned())
}

/// `socket:[12345]` → 12345.
pub fn socket_inode(link: &str) -> Option<u64> {
    link.strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

/// The local address of the socket with `inode` in a /proc/net/{tcp,udp}[6]
/// table.
pub fn local_of_inode(table: &str, inode: u64) -> Option<SocketAddr> {
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let this: u64 = fields.get(9)?.parse().ok()?;
        if this != inode {
            return None;
        }
        parse_address(fields.get(1)?)
    })
}

/// `0100007F:0035` (IPv4, the address as the kernel's host-order print of
/// network-order bytes) or 32 hex digits (IPv6, four such words), then the
/// port in hex.
pub fn parse_address(field: &str) -> Option<SocketAddr> {
    let (addr, port) = field.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let word = |s: &str| u32::from_str_radix(s, 16).ok().map(u32::to_le_bytes);
    match addr.len() {
        8 => Some(SocketAddr::from((Ipv4Addr::from(word(addr)?), port))),
        32 => {
            let mut bytes = [0u8; 16];
            for (i, chunk) in bytes.chunks_mut(4).enumerate() {
                chunk.copy_from_slice(&word(addr.get(i * 8..i * 8 + 8)?)?);
            }
            Some(SocketAddr::from((Ipv6Addr::from(bytes), port)))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Lines as Linux 6.x prints them.
    const UDP: &str = "   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
  412: 0100007F:A3F1 0100007F:0035 01 00000000:00000000 00:00000000 00000000     0        0 884211 2 0000000000000000 0
  977: 00000000:14E9 00000000:0000 07 00000000:00000000 00:00000000 00000000   104        0 31337 2 0000000000000000 0
";
    const UDP6: &str = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
  260: 00000000000000000000000001000000:0035 00000000000000000000000000000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 55 2 0000000000000000 0
  261: 0000000000000000FFFF00000100007F:1F90 00000000000000000000000000000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 56 2 0000000000000000 0
";

    #[test]
    fn finds_the_local_address_of_an_inode() {
        assert_eq!(
            local_of_inode(UDP, 884211),
            Some("127.0.0.1:41969".parse().unwrap())
        );
        assert_eq!(
            local_of_inode(UDP, 31337),
            Some("0.0.0.0:5353".parse().unwrap())
        );
        assert_eq!(local_of_inode(UDP, 7), None);
        assert_eq!(local_of_inode(UDP6, 55), Some("[::1]:53".parse().unwrap()));
        assert_eq!(
            local_of_inode(UDP6, 56),
            Some("[::ffff:127.0.0.1]:8080".parse().unwrap())
        );
    }

    #[test]
    fn odd_input_gives_nothing_not_a_panic() {
        assert_eq!(socket_inode("socket:[42]"), Some(42));
        assert_eq!(socket_inode("pipe:[42]"), None);
        assert_eq!(socket_inode("socket:[x]"), None);
        for bad in [
            "",
            "0100007F",
            "0100007F:",
            "0100007G:0035",
            "01007F:0035",
            "0100007F:10000",
        ] {
            assert_eq!(parse_address(bad), None, "{bad:?}");
        }
        assert_eq!(local_of_inode("header only\n", 1), None);
        assert_eq!(local_of_inode("h\n 1: 0100007F:0035\n", 1), None);
    }
}
