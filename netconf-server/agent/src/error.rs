//! What can go wrong in an operation, as typed values ([`OpError`]), and
//! their one conversion to RFC 6241 `<rpc-error>`s ([`OpError::into_rpc_errors`]).
//! Operations never build `<rpc-error>`s themselves: the error-type and
//! error-tag of each failure are decided here.

use l45_netconf_proto::{ErrorTag, ErrorType, RpcError};
use l45_tap_control::TapError;
use yang3::context::Context;

use crate::datastore::Datastore;
use crate::yangerr::{to_rpc_error, xml_error_path};

#[derive(Debug, thiserror::Error)]
pub enum OpError {
    // ----- the request -----
    /// A parameter the operation needs is absent.
    #[error("{message}")]
    MissingParameter {
        element: &'static str,
        message: String,
    },
    /// A parameter's value is not one the operation takes.
    #[error("{message}")]
    BadParameter { element: String, message: String },
    /// An operation, parameter or capability the agent does not implement.
    #[error("{message}")]
    NotSupported {
        element: Option<String>,
        message: String,
    },
    /// An operation in a namespace no module of the agent has.
    #[error("unknown namespace {namespace:?} of operation {operation}")]
    UnknownNamespace {
        operation: String,
        namespace: String,
    },
    /// A datastore element outside the base namespace.
    #[error("datastore in an unknown namespace")]
    DatastoreNamespace { element: String },
    /// A datastore name the agent does not have.
    #[error("unknown datastore {0}")]
    UnknownDatastore(String),
    /// An attribute the operation does not allow.
    #[error("{0}")]
    BadAttribute(String),
    /// The message no longer parses (lazy content read again).
    #[error("{0}")]
    Malformed(String),
    /// A request that contradicts itself (same source and target, killing
    /// one's own session).
    #[error("{0}")]
    Contradiction(String),

    // ----- access and locks -----
    /// NACM denies the operation or the data; `path` is a libyang data path.
    #[error("{message}")]
    AccessDenied {
        message: String,
        path: Option<String>,
    },
    /// The datastore is locked by another session.
    #[error("{} is {}locked by session {owner}", datastore.as_str(), if *already { "already " } else { "" })]
    Locked {
        datastore: Datastore,
        owner: u32,
        /// A `lock` request (RFC 6241 says "already locked").
        already: bool,
    },
    /// `lock` on a candidate with uncommitted changes.
    #[error("candidate has uncommitted changes")]
    CandidateDirty,
    /// `unlock` of a datastore nobody locked.
    #[error("{} is not locked", .0.as_str())]
    NotLocked(Datastore),

    // ----- the data -----
    /// A value the data model or the agent's state does not accept.
    #[error("{message}")]
    InvalidValue {
        message: String,
        element: Option<&'static str>,
        path: Option<String>,
    },
    /// A module's parameters are not the case its kind takes.
    #[error("module {id} of kind {kind} cannot take {case} parameters")]
    ParametersMismatch { id: u32, kind: String, case: String },
    /// Data the operation needs does not exist; `path` is a data path.
    #[error("{message}")]
    DataMissing { message: String, path: String },
    /// A resource held by someone else (a confirmed commit of another
    /// session).
    #[error("{0}")]
    InUse(String),
    /// The operation could not be carried out in the agent's state.
    #[error("{0}")]
    Failed(String),
    /// libyang rejected data (parse or validation).
    #[error(transparent)]
    Yang(#[from] yang3::Error),
    /// libyang rejected the content of a request (a protocol error).
    #[error("{0}")]
    YangRequest(yang3::Error),
    /// The tap refused a transaction or a request.
    #[error(transparent)]
    Tap(#[from] TapError),
    /// A datastore could not be made durable.
    #[error("could not persist {what}: {source}")]
    Persist {
        what: &'static str,
        source: std::io::Error,
    },
    /// A module image was refused (install-module, remove-image).
    #[error(transparent)]
    Image(#[from] crate::images::InstallError),
    /// Errors already in wire form, from the translators between NETCONF
    /// XML and libyang (filters, `<config>` content): they know the exact
    /// tag and bad-element.
    #[error("{}", .0.first().and_then(|e| e.message.clone()).unwrap_or_default())]
    Wire(Vec<RpcError>),
}

impl From<RpcError> for OpError {
    fn from(e: RpcError) -> Self {
        OpError::Wire(vec![e])
    }
}

fn protocol(tag: ErrorTag, message: String) -> RpcError {
    RpcError::new(ErrorType::Protocol, tag).message(message)
}

fn application(tag: ErrorTag, message: String) -> RpcError {
    RpcError::new(ErrorType::Application, tag).message(message)
}

impl OpError {
    /// Shorthand for a parameter-free invalid value.
    pub fn invalid(message: impl Into<String>) -> OpError {
        OpError::InvalidValue {
            message: message.into(),
            element: None,
            path: None,
        }
    }

    /// The `<rpc-error>`s a peer sees (RFC 6241 Appendix A).
    pub fn into_rpc_errors(self, ctx: &Context) -> Vec<RpcError> {
        let message = self.to_string();
        let one = match self {
            OpError::MissingParameter { element, .. } => {
                protocol(ErrorTag::MissingElement, message).info("bad-element", element)
            }
            OpError::BadParameter { element, .. } => {
                protocol(ErrorTag::InvalidValue, message).info("bad-element", &element)
            }
            OpError::NotSupported { element, .. } => {
                let e = protocol(ErrorTag::OperationNotSupported, message);
                match element {
                    Some(el) => e.info("bad-element", &el),
                    None => e,
                }
            }
            OpError::UnknownNamespace {
                operation,
                namespace,
            } => protocol(ErrorTag::UnknownNamespace, message)
                .info("bad-element", &operation)
                .info("bad-namespace", &namespace),
            OpError::DatastoreNamespace { element } => {
                protocol(ErrorTag::UnknownNamespace, message).info("bad-element", &element)
            }
            OpError::UnknownDatastore(name) => {
                protocol(ErrorTag::BadElement, message).info("bad-element", &name)
            }
            OpError::BadAttribute(_) => protocol(ErrorTag::BadAttribute, message),
            OpError::Malformed(_) => protocol(ErrorTag::MalformedMessage, message),
            OpError::Contradiction(_) => protocol(ErrorTag::InvalidValue, message),
            OpError::AccessDenied { path, .. } => {
                let e = application(ErrorTag::AccessDenied, message);
                match path {
                    Some(p) => e.path(xml_error_path(ctx, &p)),
                    None => e,
                }
            }
            OpError::Locked { owner, .. } => {
                protocol(ErrorTag::LockDenied, message).info("session-id", &owner.to_string())
            }
            OpError::CandidateDirty => {
                protocol(ErrorTag::LockDenied, message).info("session-id", "0")
            }
            OpError::NotLocked(_) => protocol(ErrorTag::OperationFailed, message),
            OpError::InvalidValue { element, path, .. } => {
                let mut e = application(ErrorTag::InvalidValue, message);
                if let Some(el) = element {
                    e = e.info("bad-element", el);
                }
                if let Some(p) = path {
                    e = e.path(xml_error_path(ctx, &p));
                }
                e
            }
            OpError::ParametersMismatch { id, case, .. } => {
                application(ErrorTag::InvalidValue, message).path(xml_error_path(
                    ctx,
                    &format!("{}/parameters/{case}", crate::datastore::module_path(id)),
                ))
            }
            OpError::DataMissing { path, .. } => {
                application(ErrorTag::DataMissing, message).path(xml_error_path(ctx, &path))
            }
            OpError::InUse(_) => application(ErrorTag::InUse, message),
            OpError::Failed(_) | OpError::Persist { .. } => {
                application(ErrorTag::OperationFailed, message)
            }
            OpError::Yang(e) => to_rpc_error(ctx, &e),
            OpError::YangRequest(e) => {
                let mut err = to_rpc_error(ctx, &e);
                err.error_type = ErrorType::Protocol;
                err
            }
            OpError::Tap(e) => {
                let tag = match e {
                    TapError::ResourceExhausted(_) => ErrorTag::ResourceDenied,
                    TapError::UnknownModule(_) => ErrorTag::DataMissing,
                    TapError::Unsupported(_) => ErrorTag::OperationNotSupported,
                    TapError::Refused { .. } | TapError::Backend(_) => ErrorTag::OperationFailed,
                };
                application(tag, message).app_tag("tap-refused")
            }
            OpError::Image(e) => image_error(e, message),
            OpError::Wire(errors) => return errors,
        };
        vec![one]
    }
}

/// The rpc-error of a refused image: the error-tag by RFC 6241's
/// meaning, the error-app-tag naming the check that failed.
fn image_error(e: crate::images::InstallError, message: String) -> RpcError {
    use crate::images::InstallError as I;
    use l45_images::ImageError as V;
    let (tag, app_tag, element) = match &e {
        I::Verify(v) => match v {
            V::TooLarge { .. } => (ErrorTag::TooBig, "image-too-large", "image"),
            V::Malformed(_) => (ErrorTag::InvalidValue, "manifest-malformed", "manifest"),
            V::DigestMismatch(_) => (ErrorTag::InvalidValue, "image-digest-mismatch", "image"),
            V::SignatureLength(_) | V::BadSignature(_) => {
                (ErrorTag::InvalidValue, "signature-invalid", "signature")
            }
            V::UnknownSigner(_) => (ErrorTag::InvalidValue, "signer-not-trusted", "manifest"),
            V::AbiUnsupported { .. } => (ErrorTag::InvalidValue, "abi-unsupported", "manifest"),
            V::WrongTarget { .. } => (ErrorTag::InvalidValue, "target-mismatch", "manifest"),
            V::NoImageSupport(_) => (
                ErrorTag::OperationNotSupported,
                "images-not-supported",
                "image",
            ),
            V::BadPublicKey(_) => (ErrorTag::InvalidValue, "signer-key-invalid", "manifest"),
        },
        I::BuiltInKind(_) => (ErrorTag::InvalidValue, "kind-built-in", "manifest"),
        I::KindTaken { .. } => (ErrorTag::DataExists, "kind-already-installed", "manifest"),
        I::NoSuchImage(_) => (ErrorTag::DataMissing, "image-not-installed", "sha256"),
        I::InUse { .. } => (ErrorTag::InUse, "image-in-use", "sha256"),
        I::Store { .. } => (ErrorTag::OperationFailed, "image-store-failed", "image"),
        I::Tap(_) => (ErrorTag::OperationFailed, "tap-refused", "image"),
    };
    application(tag, message)
        .app_tag(app_tag)
        .info("bad-element", element)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_errors_name_the_holder() {
        let ctx = l45_yang::context().expect("context");
        let e = OpError::Locked {
            datastore: Datastore::Running,
            owner: 7,
            already: true,
        }
        .into_rpc_errors(ctx);
        let xml = e[0].to_xml();
        assert!(xml.contains("<error-tag>lock-denied</error-tag>"), "{xml}");
        assert!(
            xml.contains("running is already locked by session 7"),
            "{xml}"
        );
        assert!(xml.contains("<session-id>7</session-id>"), "{xml}");
    }

    #[test]
    fn tap_errors_carry_the_app_tag() {
        let ctx = l45_yang::context().expect("context");
        let e = OpError::Tap(TapError::ResourceExhausted("full".into())).into_rpc_errors(ctx);
        let xml = e[0].to_xml();
        assert!(
            xml.contains("<error-tag>resource-denied</error-tag>"),
            "{xml}"
        );
        assert!(
            xml.contains("<error-app-tag>tap-refused</error-app-tag>"),
            "{xml}"
        );
    }
}
