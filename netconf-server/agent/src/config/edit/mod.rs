//! edit-config as a typed request ([`EditConfig`]) and the one place that
//! computes a change to a datastore ([`compute`]): the native engine
//! ([`native`]) for the common shapes of the module list, the libyang
//! engine ([`libyang`]) for everything else. Callers cannot tell which ran:
//! both give the same [`Computed`], and the conformance suite runs with the
//! native engine switched off to prove it. Stored datastores are read
//! through the same choice ([`load`]).

pub mod apply;
pub mod content;
pub mod libyang;
pub mod native;

use l45_netconf_proto::message::{Rpc, BASE_NS};
pub use l45_netconf_proto::params::{DefaultOperation, ErrorOption, TestOption};
use l45_netconf_proto::xml::Element;
use l45_netconf_proto::RpcError;
use yang3::context::Context;
use yang3::data::{DataFormat, DataParserFlags, DataTree, DataValidationFlags};

use crate::config::delta::Delta;
use crate::datastore::{schema, Datastore, Ds, ModuleMap};
use crate::error::OpError;

pub use native::WriteAccess;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EditOp {
    Merge,
    Replace,
    Create,
    Delete,
    Remove,
    None,
}

impl EditOp {
    pub fn parse(s: &str) -> Option<EditOp> {
        Some(match s {
            "merge" => EditOp::Merge,
            "replace" => EditOp::Replace,
            "create" => EditOp::Create,
            "delete" => EditOp::Delete,
            "remove" => EditOp::Remove,
            "none" => EditOp::None,
            _ => return None,
        })
    }

    /// Name as in ietf-netconf-notifications' edit-operation-type.
    pub fn as_str(self) -> &'static str {
        match self {
            EditOp::Merge => "merge",
            EditOp::Replace => "replace",
            EditOp::Create => "create",
            EditOp::Delete => "delete",
            EditOp::Remove => "remove",
            EditOp::None => "none",
        }
    }
}

/// One node the edit changed, for notifications and the tap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Touched {
    /// libyang data path of the changed node.
    pub path: String,
    pub op: EditOp,
}

/// Most `Touched` an edit reports (notifications summarise large edits by
/// their first entries).
pub const TOUCHED_MAX: usize = 100;

pub(crate) fn touch(touched: &mut Vec<Touched>, t: impl FnOnce() -> Touched) {
    if touched.len() < TOUCHED_MAX {
        touched.push(t());
    }
}

/// Which engine computes edits: `Auto` tries the native one first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Auto,
    LibyangOnly,
}

/// An `<edit-config>` request, parsed once.
pub struct EditConfig<'r> {
    pub target: Datastore,
    pub default_operation: EditOp,
    pub test_option: TestOption,
    pub error_option: ErrorOption,
    /// The `<config>` element (its children may be lazy).
    pub config: &'r Element,
    /// The whole request: the engines read the content from its source.
    pub rpc: &'r Rpc,
}

/// The namespace of an operation's parameters: its own (`edit-config`'s is
/// the base namespace, RFC 8526 `edit-data`'s that of ietf-netconf-nmda).
fn param_ns(op: &Element) -> &str {
    op.ns.as_deref().unwrap_or(BASE_NS)
}

/// The `<config>` child of an operation, or why there is none.
fn config_element(op: &Element) -> Result<&Element, OpError> {
    let ns = param_ns(op);
    match op.child(ns, "config") {
        Some(c) => Ok(c),
        None if op.child(ns, "url").is_some() => Err(OpError::NotSupported {
            element: None,
            message: "the :url capability is not supported".into(),
        }),
        None => Err(OpError::MissingParameter {
            element: "config",
            message: "<config> is missing".into(),
        }),
    }
}

fn bad(element: &str, what: &str, value: &str) -> OpError {
    OpError::BadParameter {
        element: element.into(),
        message: format!("bad {what} {value}"),
    }
}

impl<'r> EditConfig<'r> {
    /// Parses `edit-config`, or `edit-data` (whose parameters are a subset:
    /// no test-option or error-option, so the defaults apply).
    pub fn parse(rpc: &'r Rpc, target: Datastore) -> Result<EditConfig<'r>, OpError> {
        let op = &rpc.operation;
        let ns = param_ns(op);
        let text = |name: &str| op.child(ns, name).map(|e| e.trimmed_text());
        let default_operation = match text("default-operation") {
            None => EditOp::Merge,
            Some(t) => match DefaultOperation::parse(t) {
                Some(DefaultOperation::Merge) => EditOp::Merge,
                Some(DefaultOperation::Replace) => EditOp::Replace,
                Some(DefaultOperation::None) => EditOp::None,
                None => return Err(bad("default-operation", "default-operation", t)),
            },
        };
        // (edit-data has neither: its own children are checked by its caller)
        let test_option = match text("test-option") {
            None => TestOption::TestThenSet,
            Some(t) => TestOption::parse(t).ok_or_else(|| bad("test-option", "test-option", t))?,
        };
        let error_option = match text("error-option") {
            None => ErrorOption::StopOnError,
            Some(t) => {
                ErrorOption::parse(t).ok_or_else(|| bad("error-option", "error-option", t))?
            }
        };
        Ok(EditConfig {
            target,
            default_operation,
            test_option,
            error_option,
            config: config_element(op)?,
            rpc,
        })
    }

    pub fn continue_on_error(&self) -> bool {
        self.error_option == ErrorOption::ContinueOnError
    }
}

/// A computed change: what it does to the module list, the new non-module
/// data (when the edit may have changed it), what it touched (for
/// notifications) and, with continue-on-error, the errors of the parts
/// left out.
pub struct Computed {
    pub delta: Delta,
    pub rest: Option<DataTree<'static>>,
    pub touched: Vec<Touched>,
    pub errors: Vec<RpcError>,
}

/// Computes `edit` on `current` without changing it. `access` is what NACM
/// lets the user write; `authorize` checks a parsed edit against NACM.
pub fn compute(
    ctx: &'static Context,
    engine: Engine,
    edit: &EditConfig<'_>,
    current: &Ds,
    access: WriteAccess,
    authorize: &dyn Fn(&DataTree<'static>) -> Result<(), OpError>,
) -> Result<Computed, OpError> {
    if engine == Engine::Auto && !edit.continue_on_error() {
        if let Ok(schema) = schema() {
            let t0 = std::time::Instant::now();
            let scope = edit.config.scope_for_children(&edit.rpc.op_child_scope());
            let fast = native::fast_edit(
                schema,
                &current.modules,
                &edit.rpc.source,
                &edit.config.children,
                &scope,
                edit.default_operation,
                access,
            );
            tracing::debug!(
                native = fast.is_some(),
                ms = t0.elapsed().as_secs_f64() * 1e3,
                "edit-config: native engine"
            );
            if let Some((delta, touched)) = fast {
                return Ok(Computed {
                    delta,
                    rest: None,
                    touched,
                    errors: Vec::new(),
                });
            }
        }
    }
    libyang::compute(ctx, edit, current, authorize)
}

/// Reads a stored datastore (running.xml, startup.xml): the module entries
/// by the native engine (one at a time, as a merge onto an empty list), the
/// rest by libyang; all of it by libyang when the native engine is off or
/// not sure.
pub fn load(ctx: &'static Context, engine: Engine, text: &str) -> Result<Ds, String> {
    if text.trim().is_empty() {
        return Ok(Ds::new(ctx));
    }
    if engine == Engine::Auto {
        if let Some(ds) = load_native(ctx, text)? {
            return Ok(ds);
        }
    }
    libyang::load(ctx, text).map_err(|e| e.to_string())
}

fn load_native(ctx: &'static Context, text: &str) -> Result<Option<Ds>, String> {
    let schema = schema()?;
    let wrapped = format!("<config xmlns=\"{BASE_NS}\">{text}</config>");
    // Top-level elements lazy: the module list is read one entry at a time.
    let Ok(root) = l45_netconf_proto::xml::parse_lazy(wrapped.as_bytes(), &[(BASE_NS, "config")])
    else {
        return Ok(None);
    };
    let (cust, others): (Vec<Element>, Vec<Element>) = root
        .children
        .iter()
        .cloned()
        .partition(|c| c.is(l45_yang::L45_NAMESPACE, "customizations"));
    let all = WriteAccess {
        module: true,
        keys: true,
    };
    let scope = root.scope_for_children(&[]);
    let modules = if cust.is_empty() {
        ModuleMap::new()
    } else {
        match native::fast_edit(
            schema,
            &ModuleMap::new(),
            wrapped.as_bytes(),
            &cust,
            &scope,
            EditOp::Merge,
            all,
        ) {
            Some((d, _)) => {
                let mut m = ModuleMap::new();
                d.apply_to(&mut m);
                m
            }
            None => return Ok(None),
        }
    };
    let rest_xml: String = others
        .iter()
        .map(|o| o.standalone_xml(wrapped.as_bytes(), &scope))
        .collect();
    let mut rest = if rest_xml.is_empty() {
        DataTree::new(ctx)
    } else {
        DataTree::parse_string(
            ctx,
            &rest_xml,
            DataFormat::XML,
            DataParserFlags::STRICT | DataParserFlags::NO_STATE,
            DataValidationFlags::NO_STATE,
        )
        .map_err(|e| e.to_string())?
    };
    rest.validate(DataValidationFlags::NO_STATE)
        .map_err(|e| e.to_string())?;
    Ok(Some(Ds { rest, modules }))
}
