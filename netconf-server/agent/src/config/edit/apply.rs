//! edit-config operations (RFC 6241 section 7.2: merge, replace, create,
//! delete, remove, default-operation, continue-on-error) applied to a
//! libyang tree, a copy of the target; the caller validates the result.

use l45_netconf_proto::{ErrorTag, ErrorType, RpcError};
use yang3::context::Context;
use yang3::data::{Data, DataNodeRef, DataTree};
use yang3::schema::SchemaNodeKind;

use super::{EditOp, Touched};
use crate::yangerr::{to_rpc_error, xml_error_path};

pub fn node_op(node: &DataNodeRef<'_>) -> Option<EditOp> {
    node.meta()
        .find(|m| m.name() == "operation")
        .and_then(|m| EditOp::parse(m.value()))
}

fn has_any_op(tree: &DataTree<'_>) -> bool {
    tree.traverse().any(|n| node_op(&n).is_some())
}

/// Applies an edit to `target`. Returns what changed. With
/// `continue_on_error`, failed nodes are skipped and reported in the second
/// element; otherwise the first error is returned (and the caller discards
/// `target`, which is a copy).
pub fn apply(
    ctx: &'static Context,
    target: &mut DataTree<'static>,
    edit: &DataTree<'static>,
    default_op: EditOp,
    continue_on_error: bool,
) -> Result<(Vec<Touched>, Vec<RpcError>), RpcError> {
    let mut touched = Vec::new();
    // Fast path: a plain merge is exactly libyang's merge.
    if default_op == EditOp::Merge && !has_any_op(edit) {
        for top in siblings(edit) {
            record_children(&top, EditOp::Merge, &mut touched);
        }
        target.merge(edit).map_err(|e| to_rpc_error(ctx, &e))?;
        return Ok((touched, Vec::new()));
    }
    let mut applier = Applier {
        ctx,
        target,
        touched: &mut touched,
        errors: Vec::new(),
        continue_on_error,
    };
    for top in siblings(edit) {
        applier.walk(&top, default_op)?;
    }
    let errors = std::mem::take(&mut applier.errors);
    Ok((touched, errors))
}

fn siblings<'a>(tree: &'a DataTree<'static>) -> Vec<DataNodeRef<'a>> {
    match tree.reference() {
        Some(first) => first.inclusive_siblings().collect(),
        None => Vec::new(),
    }
}

fn record_children(top: &DataNodeRef<'_>, op: EditOp, touched: &mut Vec<Touched>) {
    let children: Vec<_> = top.children().collect();
    if children.is_empty() {
        touched.push(Touched {
            path: top.path(),
            op,
        });
    }
    for child in children {
        touched.push(Touched {
            path: child.path(),
            op,
        });
    }
}

struct Applier<'t> {
    ctx: &'static Context,
    target: &'t mut DataTree<'static>,
    touched: &'t mut Vec<Touched>,
    errors: Vec<RpcError>,
    continue_on_error: bool,
}

impl Applier<'_> {
    fn fail(&mut self, err: RpcError) -> Result<(), RpcError> {
        if self.continue_on_error {
            self.errors.push(err);
            Ok(())
        } else {
            Err(err)
        }
    }

    fn exists(&self, path: &str) -> bool {
        match self.target.find_path(path) {
            Ok(node) => !node.is_default(),
            Err(_) => false,
        }
    }

    fn error_at(&self, tag: ErrorTag, path: &str, message: String) -> RpcError {
        RpcError::new(ErrorType::Application, tag)
            .message(message)
            .path(xml_error_path(self.ctx, path))
    }

    fn walk(&mut self, node: &DataNodeRef<'_>, inherited: EditOp) -> Result<(), RpcError> {
        let op = node_op(node).unwrap_or(inherited);
        let path = node.path();
        let kind = node.schema().kind();
        match op {
            EditOp::Create => {
                if self.exists(&path) {
                    let e = self.error_at(
                        ErrorTag::DataExists,
                        &path,
                        format!("{path} already exists"),
                    );
                    return self.fail(e);
                }
                self.insert(node)?;
                self.touched.push(Touched { path, op });
            }
            EditOp::Delete | EditOp::Remove => {
                if self.exists(&path) {
                    if let Err(e) = l45_yang::remove_path(self.target, &path) {
                        let e = to_rpc_error(self.ctx, &e);
                        return self.fail(e);
                    }
                    self.touched.push(Touched { path, op });
                } else if op == EditOp::Delete {
                    let e = self.error_at(
                        ErrorTag::DataMissing,
                        &path,
                        format!("{path} does not exist"),
                    );
                    return self.fail(e);
                }
            }
            EditOp::Replace => {
                if self.exists(&path) {
                    if let Err(e) = l45_yang::remove_path(self.target, &path) {
                        let e = to_rpc_error(self.ctx, &e);
                        return self.fail(e);
                    }
                }
                self.insert(node)?;
                self.touched.push(Touched { path, op });
            }
            EditOp::Merge | EditOp::None => match kind {
                SchemaNodeKind::Leaf | SchemaNodeKind::LeafList => {
                    if op == EditOp::Merge {
                        self.set_term(node, &path)?;
                        self.touched.push(Touched { path, op });
                    }
                }
                SchemaNodeKind::Container | SchemaNodeKind::List => {
                    // RFC 6241 7.2: under `none`, data without a corresponding
                    // level in the target is data-missing (list entries; an
                    // absent non-presence container is no level of its own).
                    if op == EditOp::None && kind == SchemaNodeKind::List && !self.exists(&path) {
                        let e = self.error_at(
                            ErrorTag::DataMissing,
                            &path,
                            "the entry does not exist and default-operation none does not create it"
                                .into(),
                        );
                        return self.fail(e);
                    }
                    if op == EditOp::Merge && !self.exists(&path) {
                        if let Err(e) = self.target.new_path(&path, None, false) {
                            let e = to_rpc_error(self.ctx, &e);
                            return self.fail(e);
                        }
                        self.touched.push(Touched {
                            path: path.clone(),
                            op: EditOp::Create,
                        });
                    }
                    for child in node.children() {
                        if child.schema().is_list_key() {
                            continue;
                        }
                        self.walk(&child, op)?;
                    }
                }
                _ => {
                    let e = self.error_at(
                        ErrorTag::OperationNotSupported,
                        &path,
                        "not configurable by edit-config".into(),
                    );
                    return self.fail(e);
                }
            },
        }
        Ok(())
    }

    fn set_term(&mut self, node: &DataNodeRef<'_>, path: &str) -> Result<(), RpcError> {
        let value = node.value_canonical();
        if let Err(e) = self.target.new_path(path, value.as_deref(), false) {
            let e = to_rpc_error(self.ctx, &e);
            return self.fail(e);
        }
        Ok(())
    }

    /// Creates `node` and its subtree in the target; operations given on
    /// descendants still apply to them.
    fn insert(&mut self, node: &DataNodeRef<'_>) -> Result<(), RpcError> {
        let path = node.path();
        match node.schema().kind() {
            SchemaNodeKind::Leaf | SchemaNodeKind::LeafList => self.set_term(node, &path),
            _ => {
                if let Err(e) = self.target.new_path(&path, None, false) {
                    let e = to_rpc_error(self.ctx, &e);
                    return self.fail(e);
                }
                for child in node.children() {
                    if child.schema().is_list_key() {
                        continue;
                    }
                    match node_op(&child) {
                        Some(_) => self.walk(&child, EditOp::Merge)?,
                        None => self.insert(&child)?,
                    }
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::content::{config_xml, parse_config};
    use super::*;
    use l45_netconf_proto::message::BASE_NS;
    use l45_netconf_proto::xml::Element;
    use yang3::data::{DataPrinterFlags, DataValidationFlags};

    const NS: &str = l45_yang::L45_NAMESPACE;

    fn ctx() -> &'static Context {
        l45_yang::context().expect("context")
    }

    fn config(body: &str) -> (Element, Vec<u8>) {
        let src = format!("<config xmlns=\"{BASE_NS}\" xmlns:nc=\"{BASE_NS}\">{body}</config>")
            .into_bytes();
        (l45_netconf_proto::xml::parse(&src).expect("xml"), src)
    }

    fn edit(
        target: &mut DataTree<'static>,
        body: &str,
        default_op: EditOp,
    ) -> Result<Vec<Touched>, RpcError> {
        let (el, src) = config(body);
        let xml = config_xml(&el, &src, &[])?;
        let tree = parse_config(ctx(), &xml)?;
        let (touched, _) = apply(ctx(), target, &tree, default_op, false)?;
        target
            .validate(DataValidationFlags::NO_STATE)
            .map_err(|e| to_rpc_error(ctx(), &e))?;
        Ok(touched)
    }

    fn module(id: u32, extra: &str) -> String {
        format!("<customizations xmlns=\"{NS}\" xmlns:l45=\"{NS}\"><module{extra}><id>{id}</id><name>m{id}</name><kind>l45:dns-front-tag</kind></module></customizations>")
    }

    fn print(tree: &DataTree<'static>) -> String {
        l45_yang::print_xml(tree, DataPrinterFlags::SHRINK).unwrap_or_default()
    }

    #[test]
    fn merge_create_delete_remove() {
        let mut t = DataTree::new(ctx());
        let touched = edit(&mut t, &module(1, ""), EditOp::Merge).unwrap();
        assert_eq!(touched.len(), 1);
        assert!(print(&t).contains("<id>1</id>"));
        // create of an existing entry fails with data-exists
        let e = edit(
            &mut t,
            &module(1, " nc:operation=\"create\""),
            EditOp::Merge,
        )
        .unwrap_err();
        assert_eq!(e.tag, ErrorTag::DataExists);
        edit(
            &mut t,
            &module(2, " nc:operation=\"create\""),
            EditOp::Merge,
        )
        .unwrap();
        let del = format!("<customizations xmlns=\"{NS}\"><module nc:operation=\"delete\"><id>2</id></module></customizations>");
        edit(&mut t, &del, EditOp::Merge).unwrap();
        assert!(!print(&t).contains("<id>2</id>"));
        let e = edit(&mut t, &del, EditOp::Merge).unwrap_err();
        assert_eq!(e.tag, ErrorTag::DataMissing);
        assert!(e.path.unwrap().xpath.contains("l45:module[l45:id='2']"));
        let rem = del.replace("delete", "remove");
        edit(&mut t, &rem, EditOp::Merge).unwrap();
    }

    #[test]
    fn invalid_value_and_missing_mandatory() {
        let mut t = DataTree::new(ctx());
        let bad = format!("<customizations xmlns=\"{NS}\"><module><id>1</id><name>x</name><kind xmlns:l45=\"{NS}\">l45:dns-front-tag</kind><priority>70000</priority></module></customizations>");
        let e = edit(&mut t, &bad, EditOp::Merge).unwrap_err();
        assert_eq!(e.tag, ErrorTag::InvalidValue);
        let missing = format!("<customizations xmlns=\"{NS}\"><module><id>1</id><name>x</name></module></customizations>");
        let e = edit(&mut t, &missing, EditOp::Merge).unwrap_err();
        assert_eq!(e.tag, ErrorTag::MissingElement);
        let unknown = format!("<customizations xmlns=\"{NS}\"><bogus/></customizations>");
        let e = edit(&mut t, &unknown, EditOp::Merge).unwrap_err();
        assert_eq!(e.tag, ErrorTag::UnknownElement, "{e:?}");
        let no_ns = "<customizations/>";
        assert!(edit(&mut t, no_ns, EditOp::Merge).is_err());
    }

    #[test]
    fn replace_and_none_default_operation() {
        let mut t = DataTree::new(ctx());
        edit(&mut t, &module(1, ""), EditOp::Merge).unwrap();
        let prio = format!("<customizations xmlns=\"{NS}\"><module><id>1</id><priority nc:operation=\"merge\">7</priority></module></customizations>");
        edit(&mut t, &prio, EditOp::None).unwrap();
        assert!(print(&t).contains("<priority>7</priority>"));
        // replace the whole container with one other module
        edit(&mut t, &module(5, ""), EditOp::Replace).unwrap();
        let out = print(&t);
        assert!(
            out.contains("<id>5</id>") && !out.contains("<id>1</id>"),
            "{out}"
        );
    }

    #[test]
    fn bad_operation_value_is_bad_attribute() {
        let (el, src) = config(&module(1, " nc:operation=\"frobnicate\""));
        let e = config_xml(&el, &src, &[]).unwrap_err();
        assert_eq!(e.tag, ErrorTag::BadAttribute);
    }
}
