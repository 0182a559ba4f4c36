//! What the Layer 4.5 binaries need to run as services (`docs/service.md`):
//! logging to the journal or as text ([`logging`]), readiness and reload
//! notifications to systemd ([`notify`]), and shell completions and man
//! pages generated from their clap definitions ([`assets`]).

pub mod assets;
pub mod logging;
pub mod notify;
