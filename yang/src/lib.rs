//! The YANG modules of Layer 4.5, embedded in the binary, and the libyang
//! context built from them.
//!
//! `yang/*.yang` are the single source of truth for the device model; the
//! IETF modules under `yang/ietf/` are the published RFC modules the NETCONF
//! server implements. Nothing is read from disk at run time.
//!
//! This crate is also the libyang FFI boundary: where the `yang3` bindings
//! misbehave, the fix lives here, in `unsafe` code with its reasoning.
#![allow(unsafe_code)]

use std::sync::OnceLock;

use yang3::context::{Context, ContextFlags, EmbeddedModuleKey, EmbeddedModules};

pub use yang3;

/// One embedded YANG module.
#[derive(Debug, Clone, Copy)]
pub struct YangModule {
    pub name: &'static str,
    pub revision: &'static str,
    /// Full module text, served by `get-schema`.
    pub text: &'static str,
    /// Whether the server implements it (as opposed to import-only).
    pub implemented: bool,
    /// Features enabled for this module.
    pub features: &'static [&'static str],
}

macro_rules! module {
    ($name:literal, $rev:literal, $path:literal, $implemented:expr, $features:expr) => {
        YangModule {
            name: $name,
            revision: $rev,
            text: include_str!($path),
            implemented: $implemented,
            features: $features,
        }
    };
}

/// Every module the agent loads, in load order.
pub const MODULES: &[YangModule] = &[
    module!(
        "ietf-netconf",
        "2011-06-01",
        "../ietf/ietf-netconf@2011-06-01.yang",
        true,
        &[
            "writable-running",
            "candidate",
            "confirmed-commit",
            "rollback-on-error",
            "validate",
            "startup",
            "xpath"
        ]
    ),
    module!(
        "ietf-netconf-with-defaults",
        "2011-06-01",
        "../ietf/ietf-netconf-with-defaults@2011-06-01.yang",
        true,
        &[]
    ),
    module!(
        "ietf-origin",
        "2018-02-14",
        "../ietf/ietf-origin@2018-02-14.yang",
        true,
        &[]
    ),
    module!(
        "ietf-netconf-nmda",
        "2019-01-07",
        "../ietf/ietf-netconf-nmda@2019-01-07.yang",
        true,
        &["origin", "with-defaults"]
    ),
    module!(
        "ietf-netconf-acm",
        "2018-02-14",
        "../ietf/ietf-netconf-acm@2018-02-14.yang",
        true,
        &[]
    ),
    module!(
        "ietf-netconf-monitoring",
        "2010-10-04",
        "../ietf/ietf-netconf-monitoring@2010-10-04.yang",
        true,
        &[]
    ),
    module!(
        "ietf-netconf-notifications",
        "2012-02-06",
        "../ietf/ietf-netconf-notifications@2012-02-06.yang",
        true,
        &[]
    ),
    // RFC 5277 event notifications and the NETCONF stream's replay.
    module!(
        "notifications",
        "2008-07-14",
        "../ietf/notifications@2008-07-14.yang",
        true,
        &[]
    ),
    module!(
        "nc-notifications",
        "2008-07-14",
        "../ietf/nc-notifications@2008-07-14.yang",
        true,
        &[]
    ),
    // RFC 8639 subscribed notifications and RFC 8641 YANG-push (dynamic
    // subscriptions over NETCONF) with their imports. ietf-interfaces,
    // ietf-ip and ietf-network-instance serve only features we do not
    // declare, but libyang implements them all the same (RFC 7950 5.6.5:
    // the target of a leafref — ietf-subscribed-notifications' source-vrf —
    // is implemented, and ietf-network-instance augments the other two):
    // they are listed as implemented, and the agent gives their data no
    // behaviour.
    module!(
        "ietf-interfaces",
        "2018-02-20",
        "../ietf/ietf-interfaces@2018-02-20.yang",
        true,
        &[]
    ),
    module!(
        "ietf-ip",
        "2018-02-22",
        "../ietf/ietf-ip@2018-02-22.yang",
        true,
        &[]
    ),
    module!(
        "ietf-network-instance",
        "2019-01-21",
        "../ietf/ietf-network-instance@2019-01-21.yang",
        true,
        &[]
    ),
    module!(
        "ietf-restconf",
        "2017-01-26",
        "../ietf/ietf-restconf@2017-01-26.yang",
        false,
        &[]
    ),
    module!(
        "ietf-yang-patch",
        "2017-02-22",
        "../ietf/ietf-yang-patch@2017-02-22.yang",
        false,
        &[]
    ),
    module!(
        "ietf-subscribed-notifications",
        "2019-09-09",
        "../ietf/ietf-subscribed-notifications@2019-09-09.yang",
        true,
        &["encode-xml", "replay", "subtree", "xpath"]
    ),
    module!(
        "ietf-yang-push",
        "2019-09-09",
        "../ietf/ietf-yang-push@2019-09-09.yang",
        true,
        &["on-change"]
    ),
    module!(
        "layer45-netconf-edit",
        "2026-11-22",
        "../layer45-netconf-edit@2026-11-22.yang",
        true,
        &[]
    ),
    module!(
        "layer45-customization",
        "2026-12-07",
        "../layer45-customization@2026-12-07.yang",
        true,
        &[]
    ),
];

/// Namespace of the device model.
pub const L45_NAMESPACE: &str = "urn:layer45:params:xml:ns:yang:layer45-customization";
/// Namespace of the agent-internal edit annotation module.
pub const EDIT_NAMESPACE: &str = "urn:layer45:params:xml:ns:yang:layer45-netconf-edit";
/// Modules loaded for the agent's own use and not advertised to clients.
pub const INTERNAL_MODULES: &[&str] = &["layer45-netconf-edit"];
/// Module name of the device model.
pub const L45_MODULE: &str = "layer45-customization";

#[derive(Debug, thiserror::Error)]
pub enum YangError {
    #[error("libyang context: {0}")]
    Context(String),
    #[error("loading YANG module {name}: {message}")]
    Load { name: String, message: String },
}

/// Finds an embedded module by name and optional revision.
pub fn find_module(name: &str, revision: Option<&str>) -> Option<&'static YangModule> {
    MODULES
        .iter()
        .find(|m| m.name == name && revision.is_none_or(|r| r.is_empty() || r == m.revision))
}

fn build_context() -> Result<Context, YangError> {
    let mut ctx =
        Context::new(ContextFlags::empty()).map_err(|e| YangError::Context(e.to_string()))?;
    let mut embedded = EmbeddedModules::new();
    for m in MODULES {
        embedded.insert(
            EmbeddedModuleKey::new(m.name, Some(m.revision), None, None),
            m.text,
        );
    }
    // libyang keeps a pointer to the map for the context's lifetime, which is
    // the whole process.
    let embedded: &'static EmbeddedModules = Box::leak(Box::new(embedded));
    ctx.set_embedded_modules(embedded);
    // Import-only modules are only found by the imports that need them
    // (loading one by name would implement it).
    for m in MODULES.iter().filter(|m| m.implemented) {
        let features: Vec<&str> = m.features.to_vec();
        ctx.load_module(m.name, Some(m.revision), &features)
            .map_err(|e| YangError::Load {
                name: m.name.to_string(),
                message: e.to_string(),
            })?;
    }
    Ok(ctx)
}

extern "C" {
    fn free(ptr: *mut std::ffi::c_void);
}

/// Prints a data tree (with siblings) as XML. Unlike `yang3`'s
/// `print_string`, an output that libyang leaves empty (a tree of only
/// implicit default nodes) is an empty string, not a NULL dereference.
pub fn print_xml(
    tree: &yang3::data::DataTree<'_>,
    flags: yang3::data::DataPrinterFlags,
) -> Result<String, yang3::Error> {
    use yang3::data::Data as _;
    let Some(first) = tree.reference() else {
        return Ok(String::new());
    };
    print_raw(
        first.raw(),
        tree.context(),
        flags | yang3::data::DataPrinterFlags::WITH_SIBLINGS,
    )
}

/// lyd_print_mem of `node` (live for the call) into a String; NULL output
/// (nothing to print) is an empty string.
fn print_raw(
    node: *mut yang3::ffi::lyd_node,
    ctx: &yang3::context::Context,
    flags: yang3::data::DataPrinterFlags,
) -> Result<String, yang3::Error> {
    let mut out: *mut std::ffi::c_char = std::ptr::null_mut();
    // SAFETY: the caller passes a node of a tree alive for this call;
    // lyd_print_mem only reads the tree and stores a malloc'ed string (or
    // nothing) in `out`.
    let ret = unsafe {
        yang3::ffi::lyd_print_mem(
            &mut out,
            node,
            yang3::ffi::LYD_FORMAT::LYD_XML,
            flags.bits(),
        )
    };
    if ret != yang3::ffi::LY_ERR::LY_SUCCESS {
        return Err(yang3::Error::new(ctx));
    }
    if out.is_null() {
        return Ok(String::new());
    }
    // SAFETY: libyang returned a NUL-terminated string it allocated with
    // malloc; it is copied before being freed exactly once.
    let text = unsafe { std::ffi::CStr::from_ptr(out) }
        .to_string_lossy()
        .into_owned();
    // SAFETY: see above; `out` is not used after this.
    unsafe { free(out.cast()) };
    Ok(text)
}

/// A compiled schema leaf of the process-wide context, usable from any
/// thread: its value checks go straight to libyang's type plugins.
#[derive(Debug, Clone, Copy)]
pub struct StaticLeaf(*const yang3::ffi::lysc_node);

// SAFETY: the pointer is a compiled schema node of the `'static` context,
// which is never modified after `context()` built it; libyang reads
// compiled schema nodes without locking from any thread.
unsafe impl Send for StaticLeaf {}
// SAFETY: as for Send; `StaticLeaf` gives only read access.
unsafe impl Sync for StaticLeaf {}

impl StaticLeaf {
    /// Wraps a leaf or leaf-list of the static context.
    pub fn new(node: &yang3::schema::SchemaNode<'static>) -> Self {
        StaticLeaf(node.as_raw())
    }

    /// Checks `value` (JSON encoding: identities as `module:name`) against
    /// the leaf's type exactly as libyang does when it parses data, and
    /// returns its canonical form. `None` when libyang refuses it (or needs
    /// a data tree to decide, as leafrefs do).
    pub fn canonical(&self, value: &str) -> Option<String> {
        let mut canon: *const std::ffi::c_char = std::ptr::null();
        // SAFETY: `self.0` is a live compiled leaf (see the Send impl);
        // `value` is valid for `value.len()` bytes and need not be
        // NUL-terminated; a NULL ctx makes libyang log nothing; `canon`
        // receives a dictionary string we release below.
        let ret = unsafe {
            yang3::ffi::lyd_value_validate(
                std::ptr::null(),
                self.0,
                value.as_ptr().cast(),
                value.len(),
                std::ptr::null(),
                std::ptr::null_mut(),
                &mut canon,
            )
        };
        if ret != yang3::ffi::LY_ERR::LY_SUCCESS || canon.is_null() {
            return None;
        }
        // SAFETY: libyang returned a NUL-terminated dictionary string.
        let text = unsafe { std::ffi::CStr::from_ptr(canon) }
            .to_str()
            .ok()
            .map(str::to_owned);
        // SAFETY: `canon` was inserted into the dictionary of the leaf's
        // context for us (one reference); it is released once and not used
        // afterwards.
        unsafe {
            let ctx = (*(*self.0).module).ctx;
            yang3::ffi::lydict_remove(ctx, canon);
        }
        text
    }
}

/// The value space of an integer-typed leaf as inclusive intervals: the
/// compiled `range` restriction (typedefs merged by libyang), else the
/// built-in bounds. `None` for any other type. Lets callers accept a value
/// in canonical decimal form without a libyang call; anything else still
/// goes to [`StaticLeaf::canonical`].
pub fn integer_intervals(node: &yang3::schema::SchemaNode<'static>) -> Option<Vec<(i128, i128)>> {
    use yang3::ffi::LY_DATA_TYPE as T;
    let ty = node.leaf_type()?.as_raw();
    if ty.is_null() {
        return None;
    }
    // SAFETY: `ty` is the compiled type of a leaf of the static context,
    // never modified after `context()` built it.
    let base = unsafe { (*ty).basetype };
    let (lo, hi): (i128, i128) = match base {
        T::LY_TYPE_UINT8 => (0, u8::MAX.into()),
        T::LY_TYPE_UINT16 => (0, u16::MAX.into()),
        T::LY_TYPE_UINT32 => (0, u32::MAX.into()),
        T::LY_TYPE_UINT64 => (0, u64::MAX.into()),
        T::LY_TYPE_INT8 => (i8::MIN.into(), i8::MAX.into()),
        T::LY_TYPE_INT16 => (i16::MIN.into(), i16::MAX.into()),
        T::LY_TYPE_INT32 => (i32::MIN.into(), i32::MAX.into()),
        T::LY_TYPE_INT64 => (i64::MIN.into(), i64::MAX.into()),
        _ => return None,
    };
    let unsigned = lo == 0;
    // SAFETY: for these base types the compiled type is a `lysc_type_num`;
    // `range` is NULL or points to a compiled range whose `parts` is a
    // libyang sized array (its element count, an LY_ARRAY_COUNT_TYPE =
    // u64, stored just before the first element), all read-only.
    let parts: Vec<(i128, i128)> = unsafe {
        let range = (*ty.cast::<yang3::ffi::lysc_type_num>()).range;
        if range.is_null() || (*range).parts.is_null() {
            vec![(lo, hi)]
        } else {
            let parts = (*range).parts;
            let count = *parts.cast::<u64>().sub(1);
            (0..count as usize)
                .map(|i| {
                    let p = &*parts.add(i);
                    if unsigned {
                        (
                            p.__bindgen_anon_1.min_u64.into(),
                            p.__bindgen_anon_2.max_u64.into(),
                        )
                    } else {
                        (
                            p.__bindgen_anon_1.min_64.into(),
                            p.__bindgen_anon_2.max_64.into(),
                        )
                    }
                })
                .collect()
        }
    };
    Some(
        parts
            .into_iter()
            .map(|(a, b)| (a.max(lo), b.min(hi)))
            .filter(|(a, b)| a <= b)
            .collect(),
    )
}

/// Adds metadata `name` (an annotation, `module:name`, e.g.
/// `ietf-origin:origin`) with `value` (JSON encoding: identities as
/// `module:identity`) to `node`. `yang3` has no call for it.
pub fn add_meta(
    node: &yang3::data::DataNodeRef<'_>,
    name: &str,
    value: &str,
) -> Result<(), yang3::Error> {
    use yang3::data::Data as _;
    let (Ok(name_c), Ok(value_c)) = (std::ffi::CString::new(name), std::ffi::CString::new(value))
    else {
        return Err(yang3::Error::new(node.context()));
    };
    // SAFETY: `node` is a node of a tree alive (and borrowed) for this call;
    // the strings are NUL-terminated copies alive for it; with a parent (no
    // context needed: the node's is used) and no `meta` out-pointer
    // libyang stores the new metadata in the node.
    let ret = unsafe {
        yang3::ffi::lyd_new_meta(
            std::ptr::null(),
            node.as_raw(),
            std::ptr::null(),
            name_c.as_ptr(),
            value_c.as_ptr(),
            0,
            std::ptr::null_mut(),
        )
    };
    if ret != yang3::ffi::LY_ERR::LY_SUCCESS {
        return Err(yang3::Error::new(node.context()));
    }
    Ok(())
}

/// Clears the "default" flag of a data node (and of its ancestors, which
/// hold it too when it is set), so a non-presence container left without
/// children on purpose is printed as an empty element in every
/// with-defaults mode rather than skipped as a default node.
pub fn mark_explicit(node: &yang3::data::DataNodeRef<'_>) {
    let mut raw = node.as_raw();
    while !raw.is_null() {
        // SAFETY: `raw` is `node` or one of its ancestors, in a tree alive
        // (and borrowed) for this call; only the flags word is written,
        // which libyang reads when printing and validating.
        unsafe {
            (*raw).flags &= !yang3::ffi::LYD_DEFAULT;
            raw = (*raw).parent.cast();
        }
    }
}

/// Removes the data node at `path` (and its subtree) from `tree`.
/// `yang3`'s `DataTree::remove` frees a top-level node that is the tree's
/// first without moving the tree to the next one, so the tree would point
/// at freed memory (a use after free and a double free when it is
/// dropped); here the tree then starts at the next top-level node.
pub fn remove_path(tree: &mut yang3::data::DataTree<'_>, path: &str) -> Result<(), yang3::Error> {
    use yang3::data::Data as _;
    use yang3::utils::Binding as _;
    let node = tree.find_path(path)?.raw();
    let Some(first) = tree.reference().map(|f| f.raw()) else {
        return Ok(());
    };
    if node != first {
        // SAFETY: `node` is a node of `tree` other than its first
        // top-level node; freeing it (unlinked from its siblings and
        // parent by libyang) leaves `tree` valid.
        unsafe { yang3::ffi::lyd_free_tree(node) };
        return Ok(());
    }
    let ctx = tree.context();
    // SAFETY: `first` is the tree's first top-level node; its `next` is the
    // following top-level node or NULL (the last node's `next` is NULL).
    let next = unsafe { (*first).next };
    // The old handle gives up the nodes without freeing them...
    let old = std::mem::replace(tree, yang3::data::DataTree::new(ctx));
    let _ = old.into_raw();
    // SAFETY: ...`first` is unlinked from `next` and freed, and the new
    // handle owns `next` and its siblings (or nothing).
    unsafe {
        yang3::ffi::lyd_free_tree(first);
        *tree = yang3::data::DataTree::from_raw(ctx, next);
    }
    Ok(())
}

/// Some value the leaf accepts (JSON encoding: identities as
/// `module:name`), checked by libyang: its default, else the first that
/// its type admits among a few candidates (the range's lower bound, the
/// first enum, an identity derived from the base, `false`, a short
/// string, an address). For edits that must name a leaf by a value they
/// never read, such as a delete without one. `None` when none fits.
pub fn sample_value(node: &yang3::schema::SchemaNode<'static>) -> Option<String> {
    let leaf = StaticLeaf::new(node);
    // (yang3 dereferences the default without checking there is one)
    if let Some(d) = node
        .has_default()
        .then(|| node.default_value_canonical())
        .flatten()
    {
        if let Some(v) = leaf.canonical(d) {
            return Some(v);
        }
    }
    let mut candidates = Vec::new();
    if let Some(intervals) = integer_intervals(node) {
        candidates.extend(intervals.first().map(|(lo, _)| lo.to_string()));
    }
    if let Some(ty) = node.leaf_type() {
        type_candidates(ty.as_raw(), &mut candidates, 0);
    }
    candidates.extend(["false", "", "x", "0", "0.0.0.0", "::", "0.0.0.0/0"].map(String::from));
    // Fixed-length strings and binaries (keys, codes, digests).
    for n in [8, 16, 32, 64] {
        candidates.push("0".repeat(n));
        let pad = ["", "AA==", "AAA="][n % 3];
        candidates.push(format!("{}{pad}", "A".repeat(n / 3 * 4)));
    }
    candidates.into_iter().find_map(|c| leaf.canonical(&c))
}

fn type_candidates(ty: *const yang3::ffi::lysc_type, out: &mut Vec<String>, depth: usize) {
    use yang3::ffi::LY_DATA_TYPE as T;
    if ty.is_null() || depth > 8 {
        return;
    }
    let name = |p: *const std::ffi::c_char| -> Option<String> {
        // SAFETY: non-NULL names of compiled schema items are
        // NUL-terminated dictionary strings of the static context.
        (!p.is_null()).then(|| {
            unsafe { std::ffi::CStr::from_ptr(p) }
                .to_string_lossy()
                .into_owned()
        })
    };
    // A libyang sized array stores its element count (LY_ARRAY_COUNT_TYPE,
    // u64) just before the first element; NULL means empty.
    // SAFETY (for every `count` call): `a` is NULL or a sized array of the
    // static context's compiled schema, never modified after compilation.
    unsafe fn count<E>(a: *const E) -> usize {
        if a.is_null() {
            0
        } else {
            unsafe { *a.cast::<u64>().sub(1) as usize }
        }
    }
    // SAFETY: `ty` is a compiled type of the static context (read-only
    // after compilation); the casts follow its `basetype`, as libyang's
    // own type plugins do.
    unsafe {
        match (*ty).basetype {
            T::LY_TYPE_ENUM => {
                let enums = (*ty.cast::<yang3::ffi::lysc_type_enum>()).enums;
                if count(enums) > 0 {
                    out.extend(name((*enums).name));
                }
            }
            T::LY_TYPE_IDENT => {
                let bases = (*ty.cast::<yang3::ffi::lysc_type_identityref>()).bases;
                for b in 0..count(bases) {
                    let derived = (**bases.add(b)).derived;
                    for d in 0..count(derived) {
                        let ident = *derived.add(d);
                        let module = (*ident).module;
                        if let (Some(m), Some(n)) = (
                            module.as_ref().and_then(|m| name(m.name)),
                            name((*ident).name),
                        ) {
                            out.push(format!("{m}:{n}"));
                        }
                    }
                }
            }
            T::LY_TYPE_UNION => {
                let types = (*ty.cast::<yang3::ffi::lysc_type_union>()).types;
                for t in 0..count(types) {
                    type_candidates(*types.add(t), out, depth + 1);
                }
            }
            _ => {}
        }
    }
}

/// Prints one data node and its subtree (no siblings) as XML.
pub fn print_node_xml(
    node: &yang3::data::DataNodeRef<'_>,
    flags: yang3::data::DataPrinterFlags,
) -> Result<String, yang3::Error> {
    use yang3::data::Data as _;
    print_raw(
        node.raw(),
        node.context(),
        flags - yang3::data::DataPrinterFlags::WITH_SIBLINGS,
    )
}

static CONTEXT: OnceLock<Result<Context, YangError>> = OnceLock::new();

/// The process-wide libyang context with every module loaded. Built once;
/// `'static` because every data tree borrows it.
pub fn context() -> Result<&'static Context, &'static YangError> {
    CONTEXT.get_or_init(build_context).as_ref()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_embedded_module_loads() {
        let ctx = context().expect("context builds");
        for m in MODULES {
            let module = ctx
                .get_module(m.name, Some(m.revision))
                .expect("module loaded");
            assert_eq!(module.is_implemented(), m.implemented, "{}", m.name);
        }
        assert!(ctx.get_module_latest("ietf-yang-library").is_some());
    }

    #[test]
    fn remove_path_of_the_first_top_level_node_keeps_the_tree_valid() {
        use yang3::data::{DataFormat, DataParserFlags, DataTree, DataValidationFlags};
        let ctx = context().expect("context builds");
        let xml = format!(
            "<nacm xmlns=\"urn:ietf:params:xml:ns:yang:ietf-netconf-acm\"><enable-nacm>false</enable-nacm></nacm>\
             <customizations xmlns=\"{L45_NAMESPACE}\" xmlns:l45=\"{L45_NAMESPACE}\"><module><id>1</id><name>a</name><kind>l45:dns-front-tag</kind></module></customizations>"
        );
        let parse = || {
            DataTree::parse_string(
                ctx,
                &xml,
                DataFormat::XML,
                DataParserFlags::STRICT | DataParserFlags::NO_STATE,
                DataValidationFlags::NO_STATE,
            )
            .expect("data parses")
        };
        let names = |t: &DataTree<'_>| -> Vec<String> {
            t.reference()
                .map(|f| {
                    f.inclusive_siblings()
                        .map(|n| n.schema().name().to_string())
                        .collect()
                })
                .unwrap_or_default()
        };
        let mut tree = parse();
        // Validation adds the other modules' default top-level containers:
        // take the first away until none is left.
        let before = names(&tree);
        assert!(before.len() >= 2, "{before:?}");
        for gone in 1..=before.len() {
            let first = names(&tree)[0].clone();
            let first_path = tree.reference().expect("not empty").path();
            remove_path(&mut tree, &first_path).expect("removed");
            assert!(!names(&tree).contains(&first), "{:?}", names(&tree));
            assert_eq!(names(&tree).len(), before.len() - gone);
        }
        assert!(tree.reference().is_none());
        let mut tree = parse();
        remove_path(
            &mut tree,
            "/layer45-customization:customizations/module[id='1']/name",
        )
        .expect("removed");
        assert_eq!(names(&tree), before);
        assert!(remove_path(
            &mut tree,
            "/layer45-customization:customizations/module[id='9']"
        )
        .is_err());
    }

    #[test]
    fn every_config_leaf_of_the_model_has_a_sample_value() {
        let ctx = context().expect("context builds");
        let module = ctx.get_module_latest(L45_MODULE).expect("model loaded");
        let mut missing = Vec::new();
        let mut seen = 0;
        for node in module.traverse() {
            if node.kind() != yang3::schema::SchemaNodeKind::Leaf || !node.is_config() {
                continue;
            }
            seen += 1;
            match sample_value(&node) {
                Some(v) => assert_eq!(StaticLeaf::new(&node).canonical(&v), Some(v)),
                None => missing.push(node.path(yang3::schema::SchemaPathFormat::DATA)),
            }
        }
        assert!(seen > 20, "{seen} leaves");
        assert!(missing.is_empty(), "no sample value for {missing:?}");
        let of = |p: &str| sample_value(&ctx.find_path(p).expect(p));
        let m = "/layer45-customization:customizations/module";
        assert_eq!(of(&format!("{m}/priority")).as_deref(), Some("100"));
        assert!(of(&format!("{m}/kind")).is_some_and(|k| k.starts_with("layer45-customization:")));
        assert!(of(&format!("{m}/match/protocol")).is_some_and(|p| p == "tcp" || p == "udp"));
    }

    #[test]
    fn find_module_matches_revision() {
        assert!(find_module(L45_MODULE, None).is_some());
        assert!(find_module(L45_MODULE, Some("2026-12-07")).is_some());
        assert!(find_module(L45_MODULE, Some("1999-01-01")).is_none());
    }
}
