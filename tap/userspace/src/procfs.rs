//! Socket facts the tapped processes leave out of the socket table (their
//! own address, the thread's and the process's names): each would cost a
//! system call or a copy on their data path, so the agent reads them from
//! /proc when `get` asks. Also what bypass detection (`bypass.rs`) reads:
//! the namespace's sockets, which processes hold a socket, and whether a
//! process runs the tap or holds an io_uring instance. Parsing is pure and
//! tested on text; the functions that take a pid read files.

use std::collections::{HashMap, HashSet};
use std::io::BufRead;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

use l45_tap_shm::{PROTO_TCP, PROTO_UDP};

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

// ===== bypass detection =====

/// A TCP or UDP socket of the agent's network namespace, as
/// /proc/net/{tcp,udp}[6] show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NetSocket {
    /// `PROTO_TCP` or `PROTO_UDP`.
    pub protocol: u8,
    pub local: SocketAddr,
    /// The peer; `None` for a UDP socket that is not connected.
    pub remote: Option<SocketAddr>,
    pub inode: u64,
}

/// TCP state `ESTABLISHED` in /proc/net/tcp[6].
const TCP_ESTABLISHED: &str = "01";

/// The sockets of one /proc/net table that a tap would have matched: TCP
/// connections that are established, every UDP socket; entries without an
/// inode (no longer owned by a descriptor) are left out. `protocol` is
/// what the table holds.
pub fn net_sockets(table: &str, protocol: u8, out: &mut Vec<NetSocket>) {
    for line in table.lines().skip(1) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (Some(local), Some(remote), Some(state), Some(inode)) =
            (fields.get(1), fields.get(2), fields.get(3), fields.get(9))
        else {
            continue;
        };
        if protocol == PROTO_TCP && *state != TCP_ESTABLISHED {
            continue;
        }
        let (Some(local), Some(remote), Ok(inode)) = (
            parse_address(local),
            parse_address(remote),
            inode.parse::<u64>(),
        ) else {
            continue;
        };
        if inode == 0 {
            continue;
        }
        let remote = (remote.port() != 0 || !remote.ip().is_unspecified()).then_some(remote);
        out.push(NetSocket {
            protocol,
            local,
            remote,
            inode,
        });
    }
}

/// The TCP and UDP sockets of the agent's network namespace (the tables
/// that cannot be read are skipped).
pub fn read_net_sockets() -> Vec<NetSocket> {
    let mut out = Vec::new();
    for (table, protocol) in [
        ("tcp", PROTO_TCP),
        ("tcp6", PROTO_TCP),
        ("udp", PROTO_UDP),
        ("udp6", PROTO_UDP),
    ] {
        if let Ok(text) = std::fs::read_to_string(format!("/proc/net/{table}")) {
            net_sockets(&text, protocol, &mut out);
        }
    }
    out
}

/// The link of an io_uring instance's descriptor, and the name of its
/// rings' mappings, in /proc/PID/{fd,maps}.
const IO_URING: &str = "anon_inode:[io_uring]";

/// What one line of /proc/PID/maps says about the tap and io_uring.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Mapped {
    /// The tap's library (`libl45tap*.so`) is mapped.
    pub tap: bool,
    /// An io_uring instance's rings are mapped.
    pub io_uring: bool,
}

impl Mapped {
    fn or(self, other: Mapped) -> Mapped {
        Mapped {
            tap: self.tap || other.tap,
            io_uring: self.io_uring || other.io_uring,
        }
    }
}

/// One line of /proc/PID/maps: address range, permissions, offset,
/// device, inode, then the path (which may contain spaces).
pub fn maps_line(line: &str) -> Mapped {
    let path = line
        .split_whitespace()
        .skip(5)
        .collect::<Vec<_>>()
        .join(" ");
    let file = path.rsplit('/').next().unwrap_or("");
    Mapped {
        tap: path.starts_with('/') && file.starts_with("libl45tap"),
        io_uring: path == IO_URING,
    }
}

/// A whole /proc/PID/maps text.
#[cfg(test)]
pub fn maps(text: &str) -> Mapped {
    text.lines()
        .map(maps_line)
        .fold(Mapped::default(), Mapped::or)
}

/// Whether a /proc/PID/fd link is an io_uring instance.
pub fn is_io_uring(link: &str) -> bool {
    link == IO_URING
}

/// What bypass detection needs to know about a process.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProcessFacts {
    /// Its comm (the thread-group leader's).
    pub name: String,
    /// Its threads' names (read only when asked for).
    pub threads: Vec<String>,
    /// It maps the tap's library.
    pub tapped: bool,
    /// It holds an io_uring instance (a descriptor or mapped rings).
    pub io_uring: bool,
}

/// Most threads whose names are read, and most descriptors looked at, per
/// process.
const THREADS_MAX: usize = 4096;
const FDS_MAX: usize = 1 << 16;

/// What /proc says about process `pid`; `None` if it is gone or not ours
/// to read.
pub fn process_facts(pid: u32, threads: bool) -> Option<ProcessFacts> {
    let name = process_name(pid)?;
    let file = std::fs::File::open(format!("/proc/{pid}/maps")).ok()?;
    let mut mapped = Mapped::default();
    for line in std::io::BufReader::new(file).lines() {
        let Ok(line) = line else { break };
        mapped = mapped.or(maps_line(&line));
        if mapped.tap && mapped.io_uring {
            break;
        }
    }
    // Rings set up with IORING_SETUP_NO_MMAP are not in maps; the
    // descriptor is (unless the process registered it and closed it).
    let io_uring = mapped.io_uring || (mapped.tap && holds_io_uring(pid));
    let threads = if threads {
        std::fs::read_dir(format!("/proc/{pid}/task"))
            .map(|dir| {
                dir.filter_map(Result::ok)
                    .take(THREADS_MAX)
                    .filter_map(|t| std::fs::read_to_string(t.path().join("comm")).ok())
                    .map(|t| t.trim_end_matches('\n').to_owned())
                    .collect()
            })
            .unwrap_or_default()
    } else {
        Vec::new()
    };
    Some(ProcessFacts {
        name,
        threads,
        tapped: mapped.tap,
        io_uring,
    })
}

fn holds_io_uring(pid: u32) -> bool {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    dir.filter_map(Result::ok)
        .take(FDS_MAX)
        .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|l| l.to_str().is_some_and(is_io_uring)))
}

/// Most processes remembered as holding one socket.
pub const HOLDERS_MAX: usize = 8;

/// The processes (other than `skip`) holding each of `inodes` on a
/// descriptor, from /proc/*/fd: one pass over every process the agent may
/// look into (a non-root agent sees only its own user's).
pub fn socket_holders(inodes: &HashSet<u64>, skip: u32) -> HashMap<u64, Vec<u32>> {
    let mut out: HashMap<u64, Vec<u32>> = HashMap::new();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in procs.filter_map(Result::ok) {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == skip {
            continue;
        }
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        for fd in fds.filter_map(Result::ok).take(FDS_MAX) {
            let Some(inode) = std::fs::read_link(fd.path())
                .ok()
                .and_then(|l| l.to_str().and_then(socket_inode))
            else {
                continue;
            };
            if inodes.contains(&inode) {
                let pids = out.entry(inode).or_default();
                if !pids.contains(&pid) && pids.len() < HOLDERS_MAX {
                    pids.push(pid);
                }
            }
        }
    }
    out
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

    const TCP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1001 1 0000000000000000 100 0 0 10 0
   1: 0100007F:1F90 0100007F:A000 01 00000000:00000000 00:00000000 00000000     0        0 1002 1 0000000000000000 20 4 30 10 -1
   2: 0100007F:A000 0100007F:1F90 01 00000000:00000000 00:00000000 00000000  1000        0 1003 1 0000000000000000 20 4 30 10 -1
   3: 0100007F:A001 0100007F:1F90 06 00000000:00000000 03:00000F3E 00000000     0        0 0 3 0000000000000000
   4: 0100007F:A002 0100007F:1F90 08 00000000:00000000 00:00000000 00000000     0        0 1004 1 0000000000000000 20 4 30 10 -1
   5: 0100007F:A003 0100007F:1F90 01 00000000:00000000 00:00000000 00000000     0        0 0 1 0000000000000000 20 4 30 10 -1
";

    #[test]
    fn net_tables_keep_established_tcp_and_every_udp_socket() {
        let mut out = Vec::new();
        net_sockets(TCP, PROTO_TCP, &mut out);
        // Listening (0A), time-wait (06, no inode), close-wait (08) and an
        // established entry without an inode are left out.
        assert_eq!(
            out,
            vec![
                NetSocket {
                    protocol: PROTO_TCP,
                    local: "127.0.0.1:8080".parse().unwrap(),
                    remote: Some("127.0.0.1:40960".parse().unwrap()),
                    inode: 1002,
                },
                NetSocket {
                    protocol: PROTO_TCP,
                    local: "127.0.0.1:40960".parse().unwrap(),
                    remote: Some("127.0.0.1:8080".parse().unwrap()),
                    inode: 1003,
                },
            ]
        );
        out.clear();
        net_sockets(UDP, PROTO_UDP, &mut out);
        net_sockets(UDP6, PROTO_UDP, &mut out);
        let seen: Vec<(u64, Option<SocketAddr>)> =
            out.iter().map(|s| (s.inode, s.remote)).collect();
        assert_eq!(
            seen,
            vec![
                (884211, Some("127.0.0.1:53".parse().unwrap())),
                (31337, None),
                (55, None),
                (56, None),
            ]
        );
        assert!(out.iter().all(|s| s.protocol == PROTO_UDP));
        out.clear();
        net_sockets(
            "header\n 0: 0100007F:1F90\n 1: x y 01 a b c d e 12\n",
            PROTO_TCP,
            &mut out,
        );
        assert!(out.is_empty());
    }

    #[test]
    fn maps_show_the_tap_and_io_uring_rings() {
        let text = "\
55b6376a8000-55b6376a9000 r--p 00000000 fe:00 10010804                   /usr/bin/server
7f6d70c40000-7f6d70c48000 r-xp 00000000 fe:00 20                         /work/target/release/libl45tap.so
7f6d70c4e000-7f6d70c4f000 rw-s 00000000 00:10 2552332                    anon_inode:[io_uring]
7f6d70c50000-7f6d70c51000 rw-p 00000000 00:00 0 
7ffd1000-7ffd2000 rw-p 00000000 00:00 0                                  [stack]
";
        assert_eq!(
            maps(text),
            Mapped {
                tap: true,
                io_uring: true
            }
        );
        assert_eq!(maps_line(text.lines().next().unwrap()), Mapped::default());
        // A path with spaces; a file merely named like the library elsewhere
        // in the path does not count.
        assert!(maps_line("1-2 r-xp 0 fe:00 1 /opt/my libs/libl45tap.so").tap);
        assert!(!maps_line("1-2 r-xp 0 fe:00 1 /opt/libl45tap/libc.so.6").tap);
        assert_eq!(maps(""), Mapped::default());
        assert!(is_io_uring("anon_inode:[io_uring]"));
        assert!(!is_io_uring("anon_inode:[eventpoll]"));
        assert!(!is_io_uring("socket:[5]"));
    }
}
