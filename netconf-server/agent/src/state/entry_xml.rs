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

use super::tap::StateValue;
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
    let mut render = StateRender::prepare(std::iter::once(entry), std::iter::once(st))?;
    out.push_str(render.render(entry, Some(st)));
    Some(())
}

/// Renders stored entries with their state, for many entries: what could
/// make the text differ from libyang's or fail is checked once, in
/// [`StateRender::prepare`], so rendering an entry cannot fail and
/// allocates nothing (the reply is written as it is rendered).
pub(crate) struct StateRender {
    /// Canonical text of the values libyang would store differently from
    /// the text given (by module id and leaf); usually empty.
    canonical: HashMap<(u32, &'static str), String>,
    /// The entry being rendered.
    scratch: String,
}

impl StateRender {
    /// `None` when the renderer cannot give libyang's text for these
    /// entries and states: an entry that is not `<module>…</module>`, a
    /// state leaf the schema does not have under `state` or lists in
    /// another order, a value without a canonical form.
    pub(crate) fn prepare<'a>(
        mut entries: impl Iterator<Item = &'a str>,
        stats: impl IntoIterator<Item = &'a ModuleStats>,
    ) -> Option<StateRender> {
        if !entries.all(|e| e.ends_with("</module>")) {
            return None;
        }
        let schema = state_schema()?;
        // Every leaf the tap can give, in the order it gives them, must be
        // in the schema in that order (libyang prints schema order).
        let mut every = ModuleStats::idle(0, l45_tap_control::ModuleState::Registered);
        every.active_ts = Some(std::time::SystemTime::UNIX_EPOCH);
        let mut given = Vec::new();
        super::tap::visit_module_state_leaves(&every, |name, _| given.push(name));
        let mut at = 0;
        let mut checked: Vec<(&'static str, &StaticLeaf)> = Vec::new();
        for name in given {
            let pos = schema.leaves[at..].iter().position(|(n, _)| n == name)?;
            at += pos;
            if let Some(check) = &schema.leaves[at].1 {
                checked.push((name, check));
            }
            at += 1;
        }
        let mut canonical = HashMap::new();
        if !checked.is_empty() {
            for st in stats {
                let mut ok = true;
                super::tap::visit_module_state_leaves(st, |name, v| {
                    let Some((_, check)) = checked.iter().find(|(n, _)| *n == name) else {
                        return;
                    };
                    let text = v.to_string();
                    match check.canonical(&text) {
                        Some(c) if c == text => {}
                        Some(c) => {
                            canonical.insert((st.id, name), c);
                        }
                        None => ok = false,
                    }
                });
                if !ok {
                    return None;
                }
            }
        }
        Some(StateRender {
            canonical,
            scratch: String::with_capacity(1024),
        })
    }

    /// `entry` with the state of `stats`, as libyang prints it (for an
    /// entry and state that were given to [`StateRender::prepare`]).
    pub(crate) fn render<'s>(&'s mut self, entry: &'s str, stats: Option<&ModuleStats>) -> &'s str {
        use std::fmt::Write;
        let (Some(st), Some(body)) = (stats, entry.strip_suffix("</module>")) else {
            return entry;
        };
        let out = &mut self.scratch;
        out.clear();
        out.push_str(body);
        out.push_str("<state>");
        super::tap::visit_module_state_leaves(st, |name, v| {
            out.push('<');
            out.push_str(name);
            out.push('>');
            match (self.canonical.get(&(st.id, name)), v) {
                (Some(c), _) => out.push_str(&escape_text_cow(c)),
                (None, StateValue::Count(n)) => {
                    // (writing into a String cannot fail)
                    let _ = write!(out, "{n}");
                }
                (None, StateValue::Text(t)) => out.push_str(&escape_text_cow(t)),
                (None, v) => out.push_str(&escape_text_cow(&v.to_string())),
            }
            out.push_str("</");
            out.push_str(name);
            out.push('>');
        });
        out.push_str("</state></module>");
        out
    }
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
