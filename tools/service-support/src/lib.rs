//! What the Layer 4.5 binaries need to run as services (`docs/service.md`):
//! logging to the journal or as text ([`logging`]), readiness and reload
//! notifications to systemd ([`notify`]), the Prometheus endpoint of
//! `--metrics` ([`metrics`]), and shell completions and man pages generated
//! from their clap definitions ([`assets`]).

pub mod assets;
pub mod logging;
pub mod metrics;
pub mod notify;
