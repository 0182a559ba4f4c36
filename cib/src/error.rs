//! Errors of the CIB, worded for an operator.

/// Everything the CIB can refuse or fail with. A method that returns an
/// error has changed nothing: its transaction was rolled back.
#[derive(Debug, thiserror::Error)]
pub enum CibError {
    #[error("unknown device \"{0}\" (add it first, or check the name with the device list)")]
    UnknownDevice(String),

    #[error("device \"{device}\" has no module {module}")]
    UnknownModule { device: String, module: String },

    #[error("unknown module kind \"{0}\" (known kinds: {known})", known = KNOWN_KINDS)]
    UnknownKind(String),

    #[error("unknown middlebox \"{0}\"")]
    UnknownMiddlebox(String),

    #[error("no request with id {0}")]
    UnknownRequest(i64),

    #[error("no alert with id {0}")]
    UnknownAlert(i64),

    #[error("no middlebox deployment with id {0}")]
    UnknownMiddleboxDeployment(i64),

    #[error("no inverse module for kind \"{kind}\" on middlebox type \"{mb_type}\" (register one first)")]
    NoInverse { kind: String, mb_type: String },

    #[error("device \"{device}\" cannot take this: {reason}")]
    DeviceCannot { device: String, reason: String },

    #[error("enrollment refused: {0}")]
    Enrollment(String),

    #[error("no pending device \"{0}\" (see the pending list)")]
    UnknownPending(String),

    #[error("{what} \"{key}\" already exists")]
    Duplicate { what: &'static str, key: String },

    #[error("invalid {field}: {reason}")]
    InvalidParameter { field: String, reason: String },

    #[error("{subject}: {reason}")]
    InvalidState { subject: String, reason: String },

    #[error(
        "device \"{device}\" still has {live} deployed or in-flight module(s); revoke them first"
    )]
    DeviceInUse { device: String, live: usize },

    #[error("device \"{0}\" has used every module id (1..=4294967295)")]
    ModuleIdsExhausted(String),

    #[error("cannot read random bytes for a module key: {0}")]
    Random(#[source] std::io::Error),

    #[error("CIB schema migration {version} failed: {reason}")]
    Migration { version: u32, reason: String },

    #[error("CIB holds a value this program does not understand ({what}); was it edited by hand?")]
    Corrupt { what: String },

    #[error("CIB database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
}

const KNOWN_KINDS: &str = "dns-front-tag, dns-middle-tag, dns-end-tag, dns-compression, \
                           dns-clearance-filter, stream-tag, rate-limit, app-id-tag";

impl CibError {
    pub(crate) fn invalid(field: impl Into<String>, reason: impl Into<String>) -> CibError {
        CibError::InvalidParameter {
            field: field.into(),
            reason: reason.into(),
        }
    }

    pub(crate) fn state(subject: impl Into<String>, reason: impl Into<String>) -> CibError {
        CibError::InvalidState {
            subject: subject.into(),
            reason: reason.into(),
        }
    }

    pub(crate) fn corrupt(what: impl Into<String>) -> CibError {
        CibError::Corrupt { what: what.into() }
    }
}

pub type Result<T, E = CibError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    #[test]
    fn the_kind_list_in_messages_is_the_catalogue() {
        let catalogue: Vec<&str> = l45_modules::Kind::ALL.iter().map(|k| k.name()).collect();
        assert_eq!(
            super::KNOWN_KINDS.split(", ").collect::<Vec<_>>(),
            catalogue
        );
    }
}
