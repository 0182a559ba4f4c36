//! The local relay to devices that call home. Such a device connects to
//! `serve` only, so another `l45-nco` process (a CLI command) reaches it
//! through `serve`: it connects to `serve`'s Unix socket, names the device
//! in one line (`NETCONF <device>\n`), and `serve` opens a new `netconf`
//! channel on the device's SSH connection and answers `OK <host key>\n`
//! (or `ERR <reason>\n`). From then on the socket carries that channel's
//! NETCONF bytes both ways: the CLI runs its own NETCONF session (hello,
//! session-id, RPCs) on the device.
//!
//! The socket lives in a directory only the NCO's user may enter (0700,
//! created so), next to the CIB: whoever can use it could also read the
//! CIB's module keys.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tracing::{debug, info, warn};

use super::error::{NetconfError, Phase};
use super::options::ConnectOptions;
use super::session::Session;

/// Longest request line.
const MAX_LINE: u64 = 512;

/// The relay socket of the CIB at `cib`: `<cib>.relay/sock`.
pub fn socket_path(cib: &Path) -> PathBuf {
    let mut dir = cib.as_os_str().to_owned();
    dir.push(".relay");
    PathBuf::from(dir).join("sock")
}

/// A session to `device` through the relay at `path`.
pub async fn connect(
    path: &Path,
    device: &str,
    opts: ConnectOptions,
) -> Result<Session, NetconfError> {
    let unreachable = |message: String| NetconfError::Connect {
        addr: format!("relay {}", path.display()),
        message,
    };
    let opened = async {
        let stream = UnixStream::connect(path).await.map_err(|e| {
            unreachable(format!(
                "{e} (is `l45-nco serve` running? {device} calls home to it)"
            ))
        })?;
        let mut stream = BufReader::new(stream);
        stream
            .get_mut()
            .write_all(format!("NETCONF {device}\n").as_bytes())
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        let mut line = String::new();
        (&mut stream)
            .take(MAX_LINE)
            .read_line(&mut line)
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        match line.trim_end().split_once(' ') {
            Some(("OK", fingerprint)) => Ok((stream, fingerprint.to_string())),
            Some(("ERR", reason)) => Err(NetconfError::AwaitingCall {
                device: device.to_string(),
                detail: reason.to_string(),
            }),
            _ => Err(unreachable(format!("bad relay answer {line:?}"))),
        }
    };
    let (stream, fingerprint) = tokio::time::timeout(opts.connect_timeout, opened)
        .await
        .map_err(|_| NetconfError::Timeout {
            phase: Phase::Connect,
            after: opts.connect_timeout,
        })??;
    // The device's hello may have arrived with the OK line: keep it.
    let buffered = stream.buffer().to_vec();
    let stream = Prefixed {
        prefix: buffered,
        inner: stream.into_inner(),
    };
    Session::over_stream(opts, stream, fingerprint).await
}

/// A stream that first yields bytes already read from it.
struct Prefixed {
    prefix: Vec<u8>,
    inner: UnixStream,
}

impl tokio::io::AsyncRead for Prefixed {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.drain(..n);
            return std::task::Poll::Ready(Ok(()));
        }
        std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for Prefixed {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Binds the relay socket for the CIB at `cib`: its directory is created
/// 0700 (refused if it exists with another owner's or wider access), a
/// socket left by a previous `serve` is replaced.
pub fn bind(cib: &Path) -> std::io::Result<UnixListener> {
    use std::os::unix::fs::{DirBuilderExt as _, MetadataExt as _};
    let path = socket_path(cib);
    let dir = path.parent().unwrap_or(Path::new("."));
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let meta = std::fs::metadata(dir)?;
            // The CIB is created (0600) before serve binds: its owner is the NCO.
            let own = std::fs::metadata(cib)?.uid();
            if meta.mode() & 0o077 != 0 || meta.uid() != own {
                return Err(std::io::Error::other(format!(
                    "{}: mode {:o}, owner {}: others could reach devices through it; remove it",
                    dir.display(),
                    meta.mode() & 0o777,
                    meta.uid()
                )));
            }
        }
        Err(e) => return Err(e),
    }
    match std::fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    UnixListener::bind(&path)
}

/// Serves relay requests with the call-home sessions `live` finds by
/// device name: waits up to `wait` for a device that has not called (yet,
/// or again).
pub async fn serve<F>(listener: UnixListener, live: F, wait: Duration)
where
    F: Fn(&str) -> Option<Arc<Session>> + Clone + Send + Sync + 'static,
{
    loop {
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                warn!(error = %e, "relay accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let live = live.clone();
        tokio::spawn(async move {
            if let Err(e) = relay_one(stream, live, wait).await {
                debug!(error = %e, "relay connection ended");
            }
        });
    }
}

async fn relay_one(
    stream: UnixStream,
    live: impl Fn(&str) -> Option<Arc<Session>>,
    wait: Duration,
) -> std::io::Result<()> {
    let mut stream = BufReader::new(stream);
    let mut line = String::new();
    (&mut stream).take(MAX_LINE).read_line(&mut line).await?;
    let Some(device) = line.trim_end().strip_prefix("NETCONF ").map(str::to_string) else {
        stream.get_mut().write_all(b"ERR bad request\n").await?;
        return Ok(());
    };
    let deadline = tokio::time::Instant::now() + wait;
    let session: Arc<Session> = loop {
        if let Some(s) = live(&device) {
            break s;
        }
        if tokio::time::Instant::now() >= deadline {
            let why = format!("{device} has no call-home connection to serve now\n");
            stream
                .get_mut()
                .write_all(format!("ERR {why}").as_bytes())
                .await?;
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let channel = match session.open_netconf_channel().await {
        Some(Ok(c)) => c,
        Some(Err(e)) => {
            stream
                .get_mut()
                .write_all(format!("ERR {device}: {e}\n").as_bytes())
                .await?;
            return Ok(());
        }
        None => {
            stream
                .get_mut()
                .write_all(b"ERR not a call-home session\n")
                .await?;
            return Ok(());
        }
    };
    stream
        .get_mut()
        .write_all(format!("OK {}\n", session.host_key_fingerprint()).as_bytes())
        .await?;
    info!(%device, "relaying a session to a device that calls home");
    let mut unix = stream.into_inner();
    let mut channel = channel;
    let r = tokio::io::copy_bidirectional(&mut unix, &mut channel).await;
    debug!(%device, result = ?r, "relay closed");
    Ok(())
}
