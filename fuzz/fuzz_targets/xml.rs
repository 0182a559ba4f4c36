//! The XML element tree and the `<rpc>`/`<hello>` envelopes: any bytes;
//! `parse` and `parse_lazy` accept the same documents; an element's
//! `standalone_xml` (what the agent hands to libyang) parses on its own.
#![no_main]

use l45_netconf_proto::message::{self, Hello, BASE_NS};
use l45_netconf_proto::xml::{self, Element, NsDecl};

const LAZY: &[(&str, &str)] = &[
    (BASE_NS, "rpc"),
    (BASE_NS, "edit-config"),
    (BASE_NS, "config"),
];

fn standalone(e: &Element, source: &[u8], scope: &[NsDecl], depth: usize) {
    if depth > 3 {
        return;
    }
    let text = e.standalone_xml(source, scope);
    if let Err(err) = xml::parse(text.as_bytes()) {
        panic!(
            "standalone_xml of <{}> does not parse: {err}\n{text}",
            e.name
        );
    }
    let inner = e.scope_for_children(scope);
    for c in e.children.iter().take(4) {
        standalone(c, source, &inner, depth + 1);
    }
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let full = xml::parse(data);
    let lazy = xml::parse_lazy(data, LAZY);
    assert_eq!(full.is_ok(), lazy.is_ok(), "parse and parse_lazy disagree");
    if let Ok(root) = &full {
        // The source must be text for the round trip to mean anything.
        if std::str::from_utf8(data).is_ok() {
            standalone(root, data, &[], 0);
        }
    }
    if let Ok(root) = &lazy {
        // The children of <config> are kept lazy: read them back one by one.
        if let Some(op) = root.children.first() {
            if let Some(config) = op.child(BASE_NS, "config") {
                let scope = op.scope_for_children(&root.scope_for_children(&[]));
                for child in &config.children {
                    let _ = xml::for_each_child(data, child, &scope, |_| true);
                }
            }
        }
    }
    if let message::Incoming::Rpc(rpc) = message::parse_rpc(data.to_vec()) {
        if rpc.has_lazy() {
            let _ = rpc.full();
        }
        let _ = rpc.op_child_scope();
    }
    let _ = Hello::parse(data);
    let _ = message::message_id_from_head(data);
});
