//! The Prometheus endpoint both binaries serve with `--metrics ADDR`: the
//! exposition (Prometheus text format 0.0.4, written by the
//! `prometheus-client` crate from a [`Registry`]) and a minimal HTTP/1.1
//! responder over a tokio `TcpListener`.
//!
//! The responder answers `GET /metrics` only (any query string ignored):
//! another path is 404, another method 405, a request line that does not
//! parse 400, a request head over [`Limits::max_head`] bytes 431, a head not
//! complete within [`Limits::read_deadline`] 408. Every response closes the
//! connection. A slow or vanished client holds one of
//! [`Limits::max_connections`] slots for at most the read plus write
//! deadlines; connections beyond the limit are closed at once. Rendering
//! runs on a blocking thread (it may read the tap or SQLite), so the async
//! workers that serve NETCONF never wait for a scrape.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::prometheus_text;
pub use prometheus_client::registry::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("metrics endpoint: cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// The bounds of one connection.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest request head (request line and headers) read.
    pub max_head: usize,
    /// Time a client has to send its whole request head.
    pub read_deadline: Duration,
    /// Time a client has to take the whole response.
    pub write_deadline: Duration,
    /// Connections served at once; more are closed unanswered.
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_head: 8 * 1024,
            read_deadline: Duration::from_secs(5),
            write_deadline: Duration::from_secs(10),
            max_connections: 16,
        }
    }
}

/// Renders `registry` in the Prometheus text format (what `GET /metrics`
/// returns).
pub fn render(registry: &Registry) -> String {
    let mut text = String::new();
    // Writing into a String cannot fail; a collector's own formatting
    // error leaves what was written before it.
    if let Err(e) = prometheus_text::encode(&mut text, registry) {
        tracing::warn!(error = %e, "metrics: encoding stopped early");
    }
    text
}

/// One HTTP response, always with `Connection: close`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub reason: &'static str,
    pub content_type: &'static str,
    pub body: Vec<u8>,
}

impl Response {
    fn error(status: u16, reason: &'static str) -> Response {
        Response {
            status,
            reason,
            content_type: "text/plain; charset=utf-8",
            body: format!("{reason}\n").into_bytes(),
        }
    }

    /// The metrics page.
    pub fn metrics(text: String) -> Response {
        Response {
            status: 200,
            reason: "OK",
            content_type: prometheus_text::CONTENT_TYPE,
            body: text.into_bytes(),
        }
    }

    /// The response as sent on the wire.
    pub fn to_bytes(&self) -> Vec<u8> {
        let allow = if self.status == 405 {
            "Allow: GET\r\n"
        } else {
            ""
        };
        let mut out = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\n{allow}Connection: close\r\n\r\n",
            self.status,
            self.reason,
            self.content_type,
            self.body.len()
        )
        .into_bytes();
        out.extend_from_slice(&self.body);
        out
    }
}

/// What a complete request head asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Route {
    /// `GET /metrics`: render and send the page.
    Metrics,
    /// Anything else: this error response.
    Refuse(Response),
}

/// Routes a request head (the bytes before the blank line). Pure, so the
/// rules are tested byte for byte.
pub fn route(head: &[u8]) -> Route {
    let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let Ok(line) = std::str::from_utf8(line) else {
        return Route::Refuse(Response::error(400, "Bad Request"));
    };
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Route::Refuse(Response::error(400, "Bad Request"));
    };
    if !matches!(version, "HTTP/1.0" | "HTTP/1.1")
        || method.is_empty()
        || !method.bytes().all(|b| b.is_ascii_uppercase())
        || !target.starts_with('/')
    {
        return Route::Refuse(Response::error(400, "Bad Request"));
    }
    if method != "GET" {
        return Route::Refuse(Response::error(405, "Method Not Allowed"));
    }
    let path = target.split('?').next().unwrap_or(target);
    if path != "/metrics" {
        return Route::Refuse(Response::error(404, "Not Found"));
    }
    Route::Metrics
}

/// The renderer a server calls on every scrape (on a blocking thread).
pub type Render = Arc<dyn Fn() -> String + Send + Sync>;

/// Binds the metrics listener; the error names the address.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, MetricsError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| MetricsError::Bind { addr, source })
}

/// Serves `GET /metrics` on `listener` until the runtime stops.
pub fn spawn(listener: TcpListener, render: Render, limits: Limits) -> tokio::task::JoinHandle<()> {
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections.max(1)));
    tokio::spawn(async move {
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    // EMFILE and the like: wait instead of spinning.
                    tracing::warn!(error = %e, "metrics: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
                tracing::debug!(%peer, "metrics: too many connections; closed");
                continue;
            };
            let render = Arc::clone(&render);
            tokio::spawn(async move {
                serve_connection(stream, &render, limits).await;
                drop(slot);
            });
        }
    })
}

/// Reads the request head: `Ok(None)` when the peer left before finishing
/// it, `Err` with the response when it is too large.
async fn read_head(stream: &mut TcpStream, max: usize) -> Result<Option<Vec<u8>>, Response> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let n = match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return Ok(None),
            Ok(n) => n,
        };
        let searched_from = buf.len().saturating_sub(3);
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf[searched_from..]
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
        {
            buf.truncate(searched_from + end);
            return Ok(Some(buf));
        }
        if buf.len() > max {
            return Err(Response::error(431, "Request Header Fields Too Large"));
        }
    }
}

async fn serve_connection(mut stream: TcpStream, render: &Render, limits: Limits) {
    let response = match tokio::time::timeout(
        limits.read_deadline,
        read_head(&mut stream, limits.max_head),
    )
    .await
    {
        Err(_) => Response::error(408, "Request Timeout"),
        Ok(Ok(None)) => return,
        Ok(Err(refused)) => refused,
        Ok(Ok(Some(head))) => match route(&head) {
            Route::Refuse(r) => r,
            Route::Metrics => {
                let render = Arc::clone(render);
                match tokio::task::spawn_blocking(move || render()).await {
                    Ok(text) => Response::metrics(text),
                    Err(_) => Response::error(500, "Internal Server Error"),
                }
            }
        },
    };
    if response.status != 200 {
        tracing::debug!(status = response.status, "metrics: request refused");
    }
    let bytes = response.to_bytes();
    let _ = tokio::time::timeout(limits.write_deadline, async {
        stream.write_all(&bytes).await?;
        stream.shutdown().await
    })
    .await;
    // A refused client may still be sending (a huge header): closing with
    // unread bytes would reset the connection and could lose the response,
    // so read a bounded amount first.
    let mut sink = [0u8; 4096];
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        let mut left = 64 * 1024usize;
        while left > 0 {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
    })
    .await;
}

#[cfg(test)]
#[path = "metrics_tests.rs"]
mod tests;
