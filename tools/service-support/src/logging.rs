//! Logging set-up shared by the binaries: text on stderr, JSON lines on
//! stderr, or the systemd journal with every event's fields kept as
//! journal fields (`L45_SESSION_ID`, `L45_USER`, `L45_PEER`, …).
//!
//! `auto` (the default) logs to the journal when stderr *is* the journal:
//! systemd sets `JOURNAL_STREAM=DEV:INODE` for a service whose output goes
//! there, and stderr's device and inode must match (a child that inherited
//! the variable but writes elsewhere gets text).

use std::os::fd::AsFd as _;
use std::os::unix::fs::MetadataExt as _;

use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::EnvFilter;

/// The `--log-format` values.
pub const FORMATS: [&str; 4] = ["auto", "text", "json", "journal"];

/// Prefix of the journal fields made from an event's fields.
pub const JOURNAL_FIELD_PREFIX: &str = "L45";

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("unknown log format {0:?} (one of auto, text, json, journal)")]
    UnknownFormat(String),
    #[error("cannot log to the journal: {0}")]
    Journal(std::io::Error),
    #[error("cannot set the logger: {0}")]
    Init(String),
}

/// Where the log went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Text,
    Json,
    Journal,
}

/// Whether stderr is the journal stream systemd connected (see module
/// docs).
pub fn stderr_is_journal() -> bool {
    let Some(var) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let var = var.to_string_lossy();
    let Some((dev, ino)) = var.split_once(':') else {
        return false;
    };
    let (Ok(dev), Ok(ino)) = (dev.parse::<u64>(), ino.parse::<u64>()) else {
        return false;
    };
    let Ok(fd) = std::io::stderr().as_fd().try_clone_to_owned() else {
        return false;
    };
    match std::fs::File::from(fd).metadata() {
        Ok(m) => m.dev() == dev && m.ino() == ino,
        Err(_) => false,
    }
}

/// Installs the global subscriber for `format` (one of [`FORMATS`]) with
/// `filter`; `identifier` is the journal's `SYSLOG_IDENTIFIER`.
pub fn init(format: &str, filter: EnvFilter, identifier: &str) -> Result<Target, LogError> {
    let target = match format {
        "text" => Target::Text,
        "json" => Target::Json,
        "journal" => Target::Journal,
        "auto" if stderr_is_journal() => Target::Journal,
        "auto" => Target::Text,
        other => return Err(LogError::UnknownFormat(other.to_string())),
    };
    let init = |r: Result<(), tracing_subscriber::util::TryInitError>| {
        r.map_err(|e| LogError::Init(e.to_string()))
    };
    match target {
        Target::Journal => {
            let layer = tracing_journald::layer()
                .map_err(LogError::Journal)?
                .with_field_prefix(Some(JOURNAL_FIELD_PREFIX.into()))
                .with_syslog_identifier(identifier.into())
                // syslog's meaning of the levels: info is 6 (the crate's
                // default makes it 5, notice), debug and trace 7.
                .with_priority_mappings(tracing_journald::PriorityMappings {
                    info: tracing_journald::Priority::Informational,
                    debug: tracing_journald::Priority::Debug,
                    ..tracing_journald::PriorityMappings::new()
                });
            init(
                tracing_subscriber::registry()
                    .with(filter)
                    .with(layer)
                    .try_init(),
            )?;
        }
        Target::Json => init(
            tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_writer(std::io::stderr)
                .json()
                .finish()
                .try_init(),
        )?,
        Target::Text => init(
            tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_writer(std::io::stderr)
                .finish()
                .try_init(),
        )?,
    }
    Ok(target)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_format_is_refused() {
        assert!(matches!(
            init("xml", EnvFilter::new("info"), "t"),
            Err(LogError::UnknownFormat(_))
        ));
    }
}
