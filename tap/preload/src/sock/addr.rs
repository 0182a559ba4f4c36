//! Socket addresses: C `sockaddr`s read as Rust ones, and a socket's
//! addresses asked of the kernel.

use std::net::SocketAddr;

use libc::{c_int, sockaddr, socklen_t};

/// A C socket address of `len` bytes as an IPv4/IPv6 address (`None`: null,
/// too short, or another family).
pub fn sockaddr_to_std(addr: *const sockaddr, len: socklen_t) -> Option<SocketAddr> {
    if addr.is_null() {
        return None;
    }
    // SAFETY: the caller passes a sockaddr of `len` bytes; we read the family
    // first and then only the size that family needs, checked against len.
    unsafe {
        match c_int::from((*addr).sa_family) {
            libc::AF_INET if len as usize >= std::mem::size_of::<libc::sockaddr_in>() => {
                let a = &*(addr.cast::<libc::sockaddr_in>());
                Some(SocketAddr::from((
                    std::net::Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)),
                    u16::from_be(a.sin_port),
                )))
            }
            libc::AF_INET6 if len as usize >= std::mem::size_of::<libc::sockaddr_in6>() => {
                let a = &*(addr.cast::<libc::sockaddr_in6>());
                Some(SocketAddr::from((
                    std::net::Ipv6Addr::from(a.sin6_addr.s6_addr),
                    u16::from_be(a.sin6_port),
                )))
            }
            _ => None,
        }
    }
}

/// The socket's own (`peer` false) or its peer's address, from the kernel.
pub(super) fn name_of(fd: c_int, peer: bool) -> Option<SocketAddr> {
    // SAFETY: zeroed sockaddr_storage is a valid out-buffer of the given size.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as socklen_t;
    let p = (&mut ss as *mut libc::sockaddr_storage).cast::<sockaddr>();
    // SAFETY: the kernel writes at most `len` bytes.
    let r = unsafe {
        if peer {
            libc::getpeername(fd, p, &mut len)
        } else {
            libc::getsockname(fd, p, &mut len)
        }
    };
    if r != 0 {
        return None;
    }
    sockaddr_to_std(p, len)
}
