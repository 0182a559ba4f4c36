//! NETCONF operations: [`Agent::handle`] routes an `<rpc>` to its
//! operation (one file per group), after the NACM exec check, and turns an
//! operation's [`OpError`] into `<rpc-error>`s — the only place that does.

mod candidate;
mod edit;
mod get;
mod l45;
mod lock;
mod monitoring;
mod nmda;

use std::sync::atomic::Ordering;
use std::sync::Arc;

use l45_netconf_proto::message::{self, Rpc, NOTIFICATION_NS};
use l45_netconf_proto::xml::Element;
use l45_netconf_proto::{ErrorTag, ErrorType, BASE_NS};
use yang3::data::DataPrinterFlags;

use crate::agent::Agent;
use crate::datastore::Datastore;
use crate::error::OpError;
use crate::nacm::Nacm;
use crate::sessions::SessionInfo;
use crate::subscriptions::{SN_MODULE, SN_NS, YP_MODULE, YP_NS};

pub const MONITORING_NS: &str = "urn:ietf:params:xml:ns:yang:ietf-netconf-monitoring";
pub const WITH_DEFAULTS_NS: &str = "urn:ietf:params:xml:ns:yang:ietf-netconf-with-defaults";

/// What the session loop must do after a reply.
#[derive(Debug, PartialEq, Eq)]
pub enum After {
    Continue,
    Close,
    Subscribe,
}

/// An operation's reply body (inside `<rpc-reply>`) and what follows it.
pub(crate) type Reply = Result<(String, After), OpError>;

/// Where a reply goes as it is produced: a `String`, or the session's
/// framed parts on their way to the peer.
pub trait ReplySink {
    fn push(&mut self, text: &str);
}

impl ReplySink for String {
    fn push(&mut self, text: &str) {
        self.push_str(text);
    }
}

/// Writes a large reply body into a sink piece by piece, so it is sent
/// while it is produced and never held whole. It cannot fail: whatever
/// can is checked before the renderer is returned.
pub(crate) type Render = Box<dyn FnOnce(&mut dyn ReplySink)>;

/// A reply body: text, or rendered into the sink.
pub(crate) enum Body {
    Text(String),
    Render(Render),
}

/// The reply of a read, whose body may be rendered.
pub(crate) type ReadReply = Result<(Body, After), OpError>;

pub(crate) use get::nacm_read_filter;

fn ok() -> Reply {
    Ok(("<ok/>".into(), After::Continue))
}

impl Agent {
    /// Handles one RPC of a session: the reply and what the session does
    /// next.
    pub fn handle(self: &Arc<Self>, session: &SessionInfo, rpc: &Rpc) -> (String, After) {
        let mut reply = String::new();
        let after = self.handle_into(session, rpc, &mut reply);
        (reply, after)
    }

    /// Handles one RPC of a session (run on a blocking thread), writing
    /// the reply into `out` as it is produced; returns what the session
    /// does next.
    pub fn handle_into(
        self: &Arc<Self>,
        session: &SessionInfo,
        rpc: &Rpc,
        out: &mut dyn ReplySink,
    ) -> After {
        self.counters.in_rpcs.fetch_add(1, Ordering::Relaxed);
        session.in_rpcs.fetch_add(1, Ordering::Relaxed);
        match self.dispatch(session, rpc) {
            Ok((body, after)) => {
                // The envelope around the body, which is not copied into it.
                let empty = message::rpc_reply(&rpc.echo_attrs, "");
                let (open, close) = empty.split_at(empty.len() - "</rpc-reply>".len());
                out.push(open);
                match body {
                    Body::Text(text) => out.push(&text),
                    Body::Render(render) => render(out),
                }
                out.push(close);
                after
            }
            Err(error) => {
                let errors = error.into_rpc_errors(self.ctx);
                self.counters.out_rpc_errors.fetch_add(1, Ordering::Relaxed);
                session.out_rpc_errors.fetch_add(1, Ordering::Relaxed);
                if errors.iter().any(|e| {
                    matches!(
                        e.tag,
                        ErrorTag::UnknownElement
                            | ErrorTag::UnknownNamespace
                            | ErrorTag::OperationNotSupported
                    ) && e.error_type == ErrorType::Protocol
                }) {
                    self.counters.in_bad_rpcs.fetch_add(1, Ordering::Relaxed);
                    session.in_bad_rpcs.fetch_add(1, Ordering::Relaxed);
                }
                out.push(&message::error_reply(&rpc.echo_attrs, &errors));
                After::Continue
            }
        }
    }

    fn dispatch(self: &Arc<Self>, s: &SessionInfo, rpc: &Rpc) -> ReadReply {
        let text = |reply: Reply| reply.map(|(body, after)| (Body::Text(body), after));
        let op = &rpc.operation;
        let ns = op.ns.as_deref().unwrap_or("");
        let nacm = Nacm::from_running(&self.stores().running.rest);
        let module = match ns {
            BASE_NS => "ietf-netconf",
            MONITORING_NS => "ietf-netconf-monitoring",
            nmda::NMDA_NS => "ietf-netconf-nmda",
            NOTIFICATION_NS => "notifications",
            SN_NS => SN_MODULE,
            YP_NS => YP_MODULE,
            l45_yang::L45_NAMESPACE => l45_yang::L45_MODULE,
            _ => "",
        };
        if !module.is_empty() {
            // (the modules' nacm:default-deny-all operations)
            let default_deny = (module == "ietf-netconf"
                && matches!(op.name.as_str(), "kill-session" | "delete-config"))
                || (module == SN_MODULE && op.name == "kill-subscription")
                || (module == l45_yang::L45_MODULE
                    && matches!(op.name.as_str(), "install-module" | "remove-image"));
            if !nacm.may_exec(&s.username, module, &op.name, default_deny) {
                return Err(OpError::AccessDenied {
                    message: format!("user '{}' may not run {}", s.username, op.name),
                    path: None,
                });
            }
        }
        if let (BASE_NS, "get" | "get-config") | (nmda::NMDA_NS, "get-data") =
            (ns, op.name.as_str())
        {
            return match op.name.as_str() {
                "get" => self.op_get(s, rpc, &nacm, true),
                "get-config" => self.op_get(s, rpc, &nacm, false),
                _ => self.op_get_data(s, rpc, &nacm),
            };
        }
        text(match (ns, op.name.as_str()) {
            (BASE_NS, "edit-config") => self.op_edit_config(s, rpc, &nacm),
            (BASE_NS, "copy-config") => self.op_copy_config(s, rpc, &nacm),
            (BASE_NS, "delete-config") => self.op_delete_config(s, rpc),
            (BASE_NS, "lock") => self.op_lock(s, rpc),
            (BASE_NS, "unlock") => self.op_unlock(s, rpc),
            (BASE_NS, "close-session") => Ok(("<ok/>".into(), After::Close)),
            (BASE_NS, "kill-session") => self.op_kill_session(s, rpc),
            (BASE_NS, "validate") => self.op_validate(rpc),
            (BASE_NS, "commit") => self.op_commit(s, rpc),
            (BASE_NS, "discard-changes") => self.op_discard(s),
            (BASE_NS, "cancel-commit") => self.op_cancel_commit(s, rpc),
            (MONITORING_NS, "get-schema") => self.op_get_schema(rpc),
            (nmda::NMDA_NS, "edit-data") => self.op_edit_data(s, rpc, &nacm),
            (NOTIFICATION_NS, "create-subscription") => self.op_create_subscription(s, rpc),
            (SN_NS, "establish-subscription") => self.op_establish_subscription(s, rpc),
            (SN_NS, "modify-subscription") => self.op_modify_subscription(s, rpc),
            (SN_NS, "delete-subscription") => self.op_delete_subscription(s, rpc),
            (SN_NS, "kill-subscription") => self.op_kill_subscription(rpc),
            (YP_NS, "resync-subscription") => self.op_resync_subscription(s, rpc),
            (l45_yang::L45_NAMESPACE, _) => self.op_l45(s, rpc),
            (BASE_NS, other) => Err(not_supported(other)),
            (_, other) if self.ctx.get_module_latest_ns(ns).is_some() => Err(not_supported(other)),
            (_, other) => Err(OpError::UnknownNamespace {
                operation: other.to_string(),
                namespace: ns.to_string(),
            }),
        })
    }
}

fn not_supported(operation: &str) -> OpError {
    OpError::NotSupported {
        element: Some(operation.to_string()),
        message: format!("operation {operation} is not supported"),
    }
}

// ===== parameters =====

/// The datastore named by `<source>`/`<target>`.
fn datastore_param(op: &Element, which: &'static str) -> Result<Datastore, OpError> {
    let el = op
        .child(BASE_NS, which)
        .ok_or_else(|| OpError::MissingParameter {
            element: which,
            message: format!("<{which}> is missing"),
        })?;
    let Some(ds) = el.children.first() else {
        return Err(OpError::MissingParameter {
            element: which,
            message: format!("<{which}> names no datastore"),
        });
    };
    if ds.ns.as_deref() != Some(BASE_NS) {
        return Err(OpError::DatastoreNamespace {
            element: ds.name.clone(),
        });
    }
    match ds.name.as_str() {
        "running" => Ok(Datastore::Running),
        "candidate" => Ok(Datastore::Candidate),
        "startup" => Ok(Datastore::Startup),
        "url" => Err(OpError::NotSupported {
            element: Some("url".into()),
            message: "the :url capability is not supported".into(),
        }),
        other => Err(OpError::UnknownDatastore(other.to_string())),
    }
}

/// RFC 6243 with-defaults mode of a read.
fn print_flags(op: &Element) -> Result<DataPrinterFlags, OpError> {
    print_flags_in(op.child(WITH_DEFAULTS_NS, "with-defaults"))
}

/// The with-defaults mode a `<with-defaults>` parameter (in whichever
/// namespace the operation takes it) asks for; explicit without one.
fn print_flags_in(wd: Option<&Element>) -> Result<DataPrinterFlags, OpError> {
    let Some(wd) = wd else {
        return Ok(DataPrinterFlags::WD_EXPLICIT);
    };
    Ok(match wd.trimmed_text() {
        "report-all" => DataPrinterFlags::WD_ALL,
        "report-all-tagged" => DataPrinterFlags::from_bits_retain(yang3::ffi::LYD_PRINT_WD_ALL_TAG),
        "trim" => DataPrinterFlags::WD_TRIM,
        "explicit" => DataPrinterFlags::WD_EXPLICIT,
        other => {
            return Err(OpError::InvalidValue {
                message: format!("unknown with-defaults mode {other}"),
                element: Some("with-defaults"),
                path: None,
            })
        }
    })
}
