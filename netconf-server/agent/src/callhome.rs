//! NETCONF call home (RFC 8071): the agent opens the TCP connection to an
//! NCO and then runs its SSH server on it, so a device behind NAT or a
//! firewall that allows only outbound connections can be managed, and
//! authentication keeps its direction (the NCO logs in with its key, the
//! agent proves its host key).
//!
//! One task per NCO keeps a connection open: when it ends or cannot be
//! opened, the next attempt waits `min(max, base * 2^(n-1))` after the
//! n-th consecutive failure, times a random factor in [0.5, 1.5] (capped
//! at `max`) so that many devices cut off together do not call back in
//! step. A connection that lasted at least `max` counts as a success.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::sync::broadcast;
use tracing::{info, warn};

use crate::device_info::CallHomeStatus;
use crate::ssh::{self, ServerHandle, SshServer};

/// How one call-home endpoint is called.
#[derive(Debug, Clone, Copy)]
pub struct CallHomeOptions {
    /// Delay after the first failure.
    pub backoff_base: Duration,
    /// Longest delay between attempts.
    pub backoff_max: Duration,
    /// TCP connect timeout.
    pub connect_timeout: Duration,
    /// Time the NCO has to authenticate once the TCP connection is open.
    pub preauth_timeout: Duration,
}

impl Default for CallHomeOptions {
    fn default() -> Self {
        CallHomeOptions {
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(10),
            preauth_timeout: Duration::from_secs(30),
        }
    }
}

impl CallHomeOptions {
    /// The delay before the next attempt after `failures` consecutive
    /// failures, with jitter.
    pub fn delay(&self, failures: u32) -> Duration {
        let nominal = self
            .backoff_base
            .saturating_mul(1u32 << failures.saturating_sub(1).min(20))
            .min(self.backoff_max);
        nominal
            .mul_f64(rand::random_range(0.5..=1.5))
            .min(self.backoff_max)
    }
}

/// Starts calling `status.address` until `server_handle` shuts down.
pub fn spawn(
    server: SshServer,
    config: Arc<russh::server::Config>,
    server_handle: &ServerHandle,
    status: Arc<CallHomeStatus>,
    opts: CallHomeOptions,
) -> tokio::task::JoinHandle<()> {
    let handle = server_handle.clone();
    tokio::spawn(async move {
        let mut stop = handle.subscribe();
        let mut failures = 0u32;
        loop {
            let attempt = tokio::select! {
                _ = stop.recv() => return,
                r = tokio::time::timeout(opts.connect_timeout, TcpStream::connect(&status.address)) => r,
            };
            match attempt {
                Ok(Ok(socket)) => {
                    status.set_connected();
                    info!(nco = %status.address, "called home; serving SSH on the connection");
                    let opened = tokio::time::Instant::now();
                    let why = match ssh::serve_outbound(
                        server.clone(),
                        Arc::clone(&config),
                        socket,
                        opts.preauth_timeout,
                        handle.subscribe(),
                    )
                    .await
                    {
                        Ok(()) => "connection closed".to_string(),
                        Err(e) => e.to_string(),
                    };
                    status.set_disconnected(why.clone());
                    if opened.elapsed() >= opts.backoff_max {
                        failures = 1;
                    } else {
                        failures = failures.saturating_add(1);
                    }
                    info!(nco = %status.address, reason = %why, "call-home connection ended");
                }
                Ok(Err(e)) => {
                    failures = failures.saturating_add(1);
                    status.set_disconnected(e.to_string());
                    warn!(nco = %status.address, failures, error = %e, "call home failed");
                }
                Err(_) => {
                    failures = failures.saturating_add(1);
                    status.set_disconnected("connect timed out");
                    warn!(nco = %status.address, failures, "call home timed out");
                }
            }
            let delay = opts.delay(failures);
            tokio::select! {
                r = stop.recv() => {
                    if !matches!(r, Err(broadcast::error::RecvError::Lagged(_))) {
                        return;
                    }
                }
                _ = tokio::time::sleep(delay) => {}
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delay_grows_with_jitter_and_caps() {
        let o = CallHomeOptions {
            backoff_base: Duration::from_millis(100),
            backoff_max: Duration::from_secs(2),
            ..Default::default()
        };
        for _ in 0..100 {
            let d1 = o.delay(1);
            assert!(d1 >= Duration::from_millis(50) && d1 <= Duration::from_millis(150));
            let d3 = o.delay(3);
            assert!(d3 >= Duration::from_millis(200) && d3 <= Duration::from_millis(600));
            assert!(o.delay(30) <= Duration::from_secs(2));
            assert!(o.delay(30) >= Duration::from_secs(1));
        }
    }
}
