//! `sd_notify(3)` over the `NOTIFY_SOCKET` datagram socket: `READY=1` once
//! a service listens, `RELOADING=1`/`READY=1` around a reload. Without
//! `NOTIFY_SOCKET` (not started by systemd with `Type=notify`) nothing is
//! sent.

use std::os::unix::net::{SocketAddr, UnixDatagram};

#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error("NOTIFY_SOCKET {socket:?}: {source}")]
    Io {
        socket: String,
        source: std::io::Error,
    },
    #[error("NOTIFY_SOCKET {0:?} is neither a path nor an abstract name")]
    BadAddress(String),
}

/// Sends `state` (newline-separated `KEY=VALUE` assignments) to the
/// service manager. Returns whether anything was sent.
pub fn notify(state: &str) -> Result<bool, NotifyError> {
    let Some(socket) = std::env::var_os("NOTIFY_SOCKET") else {
        return Ok(false);
    };
    let socket = socket.to_string_lossy().into_owned();
    let io = |source| NotifyError::Io {
        socket: socket.clone(),
        source,
    };
    let addr = address(&socket).map_err(io)?;
    let sock = UnixDatagram::unbound().map_err(io)?;
    sock.send_to_addr(state.as_bytes(), &addr).map_err(io)?;
    Ok(true)
}

fn address(socket: &str) -> std::io::Result<SocketAddr> {
    if let Some(name) = socket.strip_prefix('@') {
        use std::os::linux::net::SocketAddrExt as _;
        SocketAddr::from_abstract_name(name.as_bytes())
    } else if socket.starts_with('/') {
        SocketAddr::from_pathname(socket)
    } else {
        Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            NotifyError::BadAddress(socket.to_string()),
        ))
    }
}

/// `READY=1` with a status line; a failure is logged, not fatal (the
/// service works; systemd will time out its start and say so).
pub fn ready(status: &str) {
    report(&format!("READY=1\nSTATUS={status}"));
}

/// `RELOADING=1` at the start of a reload (end it with [`ready`]).
pub fn reloading() {
    report("RELOADING=1");
}

fn report(state: &str) {
    if let Err(e) = notify(state) {
        tracing::warn!(error = %e, "sd_notify failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_and_abstract_addresses() {
        assert!(address("/run/systemd/notify").is_ok());
        assert!(address("@abstract-name").is_ok());
        assert!(address("relative").is_err());
    }
}
