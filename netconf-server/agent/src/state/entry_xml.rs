//! A module entry with its `state` as XML text, for the native `get` of
//! the whole store: the stored entry (as libyang prints it) with the state
//! container libyang would print before its end tag. The state's leaves
//! come from [`super::tap::module_state_leaves`], ordered as the schema
//! orders them; values of types whose canonical form may differ from the
//! text given (not integers, enumerations or booleans) go through
//! libyang's type plugin, as `new_path` would store them.

use std::collections::HashMap;
use std::sync::OnceLock;

use l45_netconf_proto::xml::escape_text_cow;
use l45_tap_control::ModuleStats;
use l45_yang::StaticLeaf;
use yang3::schema::DataValueType;

use crate::datastore::CUSTOMIZATIONS;

/// The `state` container's leaves in schema order, each with its type
/// check when its canonical form must be asked of libyang.
struct StateSchema {
    leaves: Vec<(String, Option<StaticLeaf>)>,
}

fn state_schema() -> Option<&'static StateSchema> {
    static SCHEMA: OnceLock<Option<StateSchema>> = OnceLock::new();
    SCHEMA
        .get_or_init(|| {
            let ctx = l45_yang::context().ok()?;
            let state = ctx
                .find_path(&format!("{CUSTOMIZATIONS}/module/state"))
                .ok()?;
            let mut leaves = Vec::new();
            for leaf in state.children() {
                if leaf.kind() != yang3::schema::SchemaNodeKind::Leaf {
                    // (nothing but leaves is rendered here)
                    return None;
                }
                let plain = matches!(
                    leaf.leaf_type().map(|t| t.base_type()),
                    Some(
                        DataValueType::Uint8
                            | DataValueType::Uint16
                            | DataValueType::Uint32
                            | DataValueType::Uint64
                            | DataValueType::Enum
                            | DataValueType::Bool
                    )
                );
                leaves.push((
                    leaf.name().to_string(),
                    (!plain).then(|| StaticLeaf::new(&leaf)),
                ));
            }
            Some(StateSchema { leaves })
        })
        .as_ref()
}

/// Module state by module id.
pub(crate) type StatsById = HashMap<u32, ModuleStats>;

/// Appends `entry` (stored XML, `<module>…</module>`) with the state of
/// `stats` to `out`. `None` (and `out` unchanged) when that cannot be done
/// as libyang would print it: then the caller reads the libyang way.
pub(crate) fn push_entry_with_state(
    entry: &str,
    stats: Option<&ModuleStats>,
    out: &mut String,
) -> Option<()> {
    let Some(st) = stats else {
        out.push_str(entry);
        return Some(());
    };
    let body = entry.strip_suffix("</module>")?;
    let schema = state_schema()?;
    let leaves = super::tap::module_state_leaves(st);
    let mut state = String::with_capacity(256);
    let mut used = 0;
    for (name, check) in &schema.leaves {
        let Some((_, value)) = leaves.iter().find(|(n, _)| n == name) else {
            continue;
        };
        let canonical;
        let value = match check {
            Some(check) => {
                canonical = check.canonical(value)?;
                canonical.as_str()
            }
            None => value.as_str(),
        };
        state.push('<');
        state.push_str(name);
        state.push('>');
        state.push_str(&escape_text_cow(value));
        state.push_str("</");
        state.push_str(name);
        state.push('>');
        used += 1;
    }
    if used != leaves.len() {
        // A leaf the schema does not have under `state`.
        return None;
    }
    out.push_str(body);
    if used > 0 {
        out.push_str("<state>");
        out.push_str(&state);
        out.push_str("</state>");
    }
    out.push_str("</module>");
    Some(())
}

/// Whether [`push_entry_with_state`] renders `entry` with `stats` exactly
/// as libyang prints the entry with that state added the way `get` adds
/// it (a tree of that one entry).
pub(crate) fn renders_as_libyang(
    ctx: &'static yang3::context::Context,
    id: u32,
    entry: &crate::datastore::Entry,
    stats: Option<&ModuleStats>,
) -> Result<bool, yang3::Error> {
    let mut tree = crate::datastore::Ds::new(ctx).tree_of(ctx, std::iter::once(entry))?;
    if let Some(st) = stats {
        let p = format!("{}/state", crate::datastore::module_path(id));
        for (leaf, v) in super::tap::module_state_leaves(st) {
            tree.new_path(&format!("{p}/{leaf}"), Some(&v), false)?;
        }
    }
    let printed = l45_yang::print_xml(
        &tree,
        yang3::data::DataPrinterFlags::WD_EXPLICIT | yang3::data::DataPrinterFlags::SHRINK,
    )?;
    let mut native = format!("<customizations xmlns=\"{}\">", l45_yang::L45_NAMESPACE);
    if push_entry_with_state(entry, stats, &mut native).is_none() {
        return Ok(false);
    }
    native.push_str("</customizations>");
    Ok(native == printed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{ctx, L45, RICH};
    use l45_tap_control::ModuleState;
    use std::time::{Duration, SystemTime};

    #[test]
    fn state_renders_as_libyang_prints_it() {
        let src =
            format!("<customizations xmlns=\"{L45}\" xmlns:l45=\"{L45}\">{RICH}</customizations>");
        let map = crate::datastore::entries_of(&crate::testutil::tree(&src)).expect("entries");
        let entry = &map[&7];
        let mut st = ModuleStats::idle(7, ModuleState::Registered);
        assert!(renders_as_libyang(ctx(), 7, entry, Some(&st)).expect("libyang"));
        st.active_ts = Some(SystemTime::UNIX_EPOCH + Duration::from_millis(1_795_305_600_250));
        st.bytes_sent = u64::MAX;
        st.socket_count = 3;
        assert!(renders_as_libyang(ctx(), 7, entry, Some(&st)).expect("libyang"));
        assert!(renders_as_libyang(ctx(), 7, entry, None).expect("libyang"));
        let mut out = String::new();
        push_entry_with_state(entry, Some(&st), &mut out).expect("rendered");
        assert!(
            out.contains("<state><state>registered</state><active-ts>"),
            "{out}"
        );
        assert!(
            out.ends_with("<errors>0</errors></state></module>"),
            "{out}"
        );
        // Not an entry as stored: nothing rendered.
        let mut out = String::new();
        assert!(push_entry_with_state("<module>", Some(&st), &mut out).is_none());
        assert!(out.is_empty());
    }
}
