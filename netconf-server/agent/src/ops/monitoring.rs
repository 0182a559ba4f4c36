//! RFC 6022 `get-schema`: the embedded YANG modules, and those built into
//! libyang, by name and revision.

use std::sync::Arc;

use l45_netconf_proto::message::Rpc;
use l45_netconf_proto::xml::escape_text;

use super::{After, Reply, MONITORING_NS};
use crate::agent::Agent;
use crate::error::OpError;

impl Agent {
    pub(super) fn op_get_schema(self: &Arc<Self>, rpc: &Rpc) -> Reply {
        let op = &rpc.operation;
        let id = op
            .child(MONITORING_NS, "identifier")
            .map(|e| e.trimmed_text().to_string())
            .ok_or_else(|| OpError::MissingParameter {
                element: "identifier",
                message: "get-schema needs an identifier".into(),
            })?;
        let version = op
            .child(MONITORING_NS, "version")
            .map(|e| e.trimmed_text().to_string());
        if let Some(format) = op.child(MONITORING_NS, "format") {
            let f = format.trimmed_text();
            if !(f == "yang" || f.ends_with(":yang")) {
                return Err(OpError::InvalidValue {
                    message: format!("schema format {f} is not available"),
                    element: Some("format"),
                    path: None,
                });
            }
        }
        let unknown = || OpError::InvalidValue {
            message: format!("no schema {id}"),
            element: Some("identifier"),
            path: None,
        };
        if l45_yang::INTERNAL_MODULES.contains(&id.as_str()) {
            return Err(unknown());
        }
        let module = l45_yang::find_module(&id, version.as_deref())
            .map(|m| m.text.to_string())
            .or_else(|| {
                // Modules built into libyang (ietf-inet-types, ...).
                let m = match &version {
                    Some(v) if !v.is_empty() => self.ctx.get_module(&id, Some(v)),
                    _ => self.ctx.get_module_latest(&id),
                }?;
                m.print_string(
                    yang3::schema::SchemaOutputFormat::YANG,
                    yang3::schema::SchemaPrinterFlags::empty(),
                )
                .ok()
            })
            .ok_or_else(unknown)?;
        Ok((
            format!(
                "<data xmlns=\"{MONITORING_NS}\">{}</data>",
                escape_text(&module)
            ),
            After::Continue,
        ))
    }
}
