//! The RFC 6241 operation parameters both ends name: datastores and the
//! edit-config options, with their wire names.

macro_rules! wire_enum {
    ($(#[$doc:meta])* $name:ident { $($variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum $name {
            $($variant),+
        }

        impl $name {
            /// The name on the wire.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }

            /// The value of a wire name.
            pub fn parse(text: &str) -> Option<$name> {
                match text {
                    $($text => Some($name::$variant),)+
                    _ => None,
                }
            }
        }
    };
}

wire_enum! {
    /// A configuration datastore (RFC 6241 5.1).
    Datastore { Running = "running", Candidate = "candidate", Startup = "startup" }
}

wire_enum! {
    /// `<default-operation>` of edit-config.
    DefaultOperation { Merge = "merge", Replace = "replace", None = "none" }
}

wire_enum! {
    /// `<test-option>` of edit-config (`:validate`).
    TestOption { TestThenSet = "test-then-set", Set = "set", TestOnly = "test-only" }
}

wire_enum! {
    /// `<error-option>` of edit-config.
    ErrorOption {
        StopOnError = "stop-on-error",
        ContinueOnError = "continue-on-error",
        RollbackOnError = "rollback-on-error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for d in [Datastore::Running, Datastore::Candidate, Datastore::Startup] {
            assert_eq!(Datastore::parse(d.as_str()), Some(d));
        }
        assert_eq!(TestOption::parse("test-only"), Some(TestOption::TestOnly));
        assert_eq!(
            ErrorOption::parse("rollback-on-error"),
            Some(ErrorOption::RollbackOnError)
        );
        assert_eq!(DefaultOperation::parse("sideways"), None);
    }
}
