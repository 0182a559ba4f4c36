//! What a change does to the module list ([`Delta`]): computed against a
//! datastore without changing it, then applied by the commit.

use std::collections::BTreeMap;
use std::sync::Arc;

use l45_tap_control::ModuleConfig;

use crate::datastore::{Entry, ModuleMap};

/// What an edit does to the module list.
#[derive(Debug, Default)]
pub struct Delta {
    /// Every entry not in `changes` goes.
    pub clear: bool,
    /// id → new entry, or `None` to remove it.
    pub changes: BTreeMap<u32, Option<Entry>>,
    /// New entries' tap view, to skip re-parsing them for the tap (taken
    /// out, not copied, when the transaction is built). Sorted by id; each
    /// id has `Some` entry in `changes`.
    pub parsed: Vec<(u32, Parsed)>,
}

/// What the tap needs of a new entry.
#[derive(Debug)]
pub struct Parsed {
    pub config: ModuleConfig,
    /// Index in `ListSchema::cases` of the parameters' case, if any.
    pub case: Option<usize>,
}

impl Delta {
    /// The entry `id` has after the delta, given its current one.
    pub fn after<'a>(&'a self, id: u32, current: Option<&'a Entry>) -> Option<&'a Entry> {
        match self.changes.get(&id) {
            Some(v) => v.as_ref(),
            None if self.clear => None,
            None => current,
        }
    }

    /// Applies the delta to a map.
    pub fn apply_to(self, map: &mut ModuleMap) {
        if self.clear {
            map.clear();
        }
        for (id, v) in self.changes {
            match v {
                Some(e) => {
                    map.insert(id, e);
                }
                None => {
                    map.remove(&id);
                }
            }
        }
    }

    /// The delta that turns `old` into `new` (entries compared by pointer
    /// first, then by text).
    pub fn between(old: &ModuleMap, new: &ModuleMap) -> Delta {
        let mut d = Delta::default();
        for (id, e) in new {
            match old.get(id) {
                Some(o) if Arc::ptr_eq(o, e) || o == e => {}
                _ => {
                    d.changes.insert(*id, Some(e.clone()));
                }
            }
        }
        for id in old.keys() {
            if !new.contains_key(id) {
                d.changes.insert(*id, None);
            }
        }
        d
    }
}
