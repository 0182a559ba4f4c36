//! The commit pipeline, holo-style: a change of running becomes a tap
//! [`Transaction`] (checked: each module's parameters fit its kind) →
//! `prepare` (may fail; nothing changed) → persist (journal record or
//! snapshot, fsync'ed; on failure the tap aborts) → `apply` (cannot fail) →
//! the new running swapped in → notifications. This file is the only caller
//! of `TapControl::{prepare, apply, abort}`; start-up is a commit onto an
//! empty running.

use std::collections::BTreeSet;
use std::sync::Arc;

use l45_tap_control::{Change, ModuleConfig, Transaction};
use yang3::data::DataTree;

use crate::agent::Agent;
use crate::config::delta::Delta;
use crate::config::edit::{EditOp, Touched};
use crate::datastore::entry::{parameters_case, Entry, ModuleMap, Slots};
use crate::datastore::schema::ListSchema;
use crate::datastore::{module_path, schema, Ds, CUSTOMIZATIONS};
use crate::error::OpError;
use crate::images::{parse_arguments, ImageStore};
use crate::sessions::Actor;

/// One change of running.
pub struct Commit<'a> {
    pub actor: Actor<'a>,
    pub delta: Delta,
    /// Replaces the non-module data when given.
    pub rest: Option<DataTree<'static>>,
    /// What the change touched, for the config-change notification.
    pub touched: &'a [Touched],
    /// Where the change came from (for the log): running, candidate,
    /// startup.
    pub source: &'static str,
}

/// The tap changes of `delta` on `current`, checking that parameters fit
/// the kind and that installed kinds are installed.
fn transaction(
    schema: &ListSchema,
    current: &ModuleMap,
    delta: &mut Delta,
    images: &ImageStore,
) -> Result<Transaction, OpError> {
    let mut txn = changes(schema, current, delta)?;
    for change in &mut txn.changes {
        if let Change::Register(m) | Change::Update(m) = change {
            resolve_installed(m, images)?;
        }
    }
    Ok(txn)
}

/// A module of kind `installed-binary` as the tap runs it: the installed
/// kind it names, with its `arguments` as parameters. Naming a kind that
/// is not installed (or another build of it than the pinned digest) is
/// refused.
fn resolve_installed(m: &mut ModuleConfig, images: &ImageStore) -> Result<(), OpError> {
    if m.kind != "installed-binary" {
        return Ok(());
    }
    let path = format!("{}/parameters/installed/kind-name", module_path(m.id));
    let Some(kind) = m.parameters.get("kind-name").cloned() else {
        return Err(OpError::InvalidValue {
            message: format!(
                "module {} of kind installed-binary names no installed kind",
                m.id
            ),
            element: None,
            path: Some(path),
        });
    };
    let Some(img) = images.by_kind(&kind) else {
        return Err(OpError::InvalidValue {
            message: format!(
                "module {}: kind {kind} is not installed on this device (install-module first)",
                m.id
            ),
            element: None,
            path: Some(path),
        });
    };
    if let Some(pin) = m.parameters.get("sha256") {
        if !pin.eq_ignore_ascii_case(&img.manifest.sha256_hex) {
            return Err(OpError::InvalidValue {
                message: format!(
                    "module {}: kind {kind} is installed from image {}, not the pinned {pin}",
                    m.id, img.manifest.sha256_hex
                ),
                element: None,
                path: Some(format!("{}/parameters/installed/sha256", module_path(m.id))),
            });
        }
    }
    m.parameters = parse_arguments(m.parameters.get("arguments").map_or("", String::as_str));
    m.kind = kind;
    Ok(())
}

/// The tap changes of `delta` on `current` as the entries say, checking
/// that parameters fit the kind.
fn changes(
    schema: &ListSchema,
    current: &ModuleMap,
    delta: &mut Delta,
) -> Result<Transaction, OpError> {
    let check_case = |id: u32, kind: &str, case: Option<usize>| -> Result<(), OpError> {
        if let Some(case) = case.and_then(|c| schema.cases[c].2.as_deref()) {
            if parameters_case(kind) != Some(case) {
                return Err(OpError::ParametersMismatch {
                    id,
                    kind: kind.to_string(),
                    case: case.to_string(),
                });
            }
        }
        Ok(())
    };
    let parsed = std::mem::take(&mut delta.parsed);
    // A load: only new entries, each already parsed by the edit. Their tap
    // view moves into the transaction (same order, no second copy).
    let only_new = !delta.clear
        && parsed.len() == delta.changes.len()
        && parsed
            .iter()
            .zip(&delta.changes)
            .all(|((p, _), (c, _))| p == c && !current.contains_key(p));
    if only_new {
        for (id, p) in &parsed {
            check_case(*id, &p.config.kind, p.case)?;
        }
        let changes = parsed
            .into_iter()
            .map(|(_, p)| Change::Register(p.config))
            .collect();
        return Ok(Transaction { changes });
    }
    let mut ids: BTreeSet<u32> = delta.changes.keys().copied().collect();
    if delta.clear {
        ids.extend(current.keys().copied());
    }
    let slots = |e: &Entry| Slots::parse(schema, e).ok();
    let mut parsed = parsed.into_iter().peekable();
    let mut changes = Vec::with_capacity(ids.len());
    for id in ids {
        // (both ascending; `parsed` ids are a subset of `ids`)
        let mut pre = None;
        while let Some((pid, _)) = parsed.peek() {
            if *pid > id {
                break;
            }
            if let Some((pid, p)) = parsed.next() {
                if pid == id {
                    pre = Some(p);
                }
            }
        }
        let old = current.get(&id);
        let new = delta.after(id, old);
        if let (Some(o), Some(n)) = (old, new) {
            if Arc::ptr_eq(o, n) {
                continue;
            }
        }
        let (new_cfg, new_case) = match (new, pre) {
            (None, _) => (None, None),
            (Some(_), Some(p)) => (Some(p.config), p.case),
            (Some(n), None) => match slots(n) {
                Some(s) => (
                    Some(s.module_config(schema)),
                    s.parameters_case_index(schema),
                ),
                None => (None, None),
            },
        };
        if let Some(m) = &new_cfg {
            check_case(id, &m.kind, new_case)?;
        }
        match (old, new_cfg) {
            (None, Some(n)) => changes.push(Change::Register(n)),
            // The tap holds the old configuration: no need to read it.
            (Some(_), None) => changes.push(Change::Unregister(id)),
            (Some(o), Some(n)) => {
                if slots(o).map(|s| s.module_config(schema)).as_ref() != Some(&n) {
                    changes.push(Change::Update(n));
                }
            }
            (None, None) => {}
        }
    }
    Ok(Transaction { changes })
}

impl Agent {
    /// Start-up: the stored running configuration committed onto the empty
    /// running, so the tap gets every module through the same pipeline as
    /// any edit. `clear` on the empty running makes it a replacement, so
    /// the journal starts from a compact snapshot.
    pub(crate) fn commit_startup(&self, running: Ds) -> Result<(), OpError> {
        let delta = Delta {
            clear: true,
            changes: running
                .modules
                .into_iter()
                .map(|(id, e)| (id, Some(e)))
                .collect(),
            parsed: Vec::new(),
        };
        let touched = [Touched {
            path: CUSTOMIZATIONS.to_string(),
            op: EditOp::Replace,
        }];
        self.commit(Commit {
            actor: Actor::SYSTEM,
            delta,
            rest: Some(running.rest),
            touched: &touched,
            source: "startup",
        })
    }

    /// The one path by which running changes. Call with the write lock
    /// held.
    pub(crate) fn commit(&self, commit: Commit<'_>) -> Result<(), OpError> {
        let source = commit.source;
        let result = self.commit_uncounted(commit);
        self.metrics.commit(source, result.is_ok());
        result
    }

    fn commit_uncounted(&self, commit: Commit<'_>) -> Result<(), OpError> {
        let schema = schema().map_err(OpError::Failed)?;
        let t0 = std::time::Instant::now();
        let ms = |t: std::time::Instant| t.elapsed().as_secs_f64() * 1e3;
        let Commit {
            actor,
            mut delta,
            rest,
            touched,
            source,
        } = commit;
        // Nobody may lock every user out of NACM (a device nobody can
        // reconfigure); the agent's own restores are exempt.
        if let Some(rest) = &rest {
            if actor.session_id != Actor::SYSTEM.session_id
                && !crate::nacm::Nacm::from_running(rest).someone_may_write_nacm()
            {
                return Err(OpError::InvalidValue {
                    message: "the change would leave no user able to write the NACM configuration"
                        .into(),
                    element: None,
                    path: Some(crate::nacm::NACM_PATH.to_string()),
                });
            }
        }
        let txn = transaction(
            schema,
            &self.stores().running.modules,
            &mut delta,
            &crate::agent::guard(&self.images),
        )?;
        let txn_ms = ms(t0);
        let t = std::time::Instant::now();
        self.tap.prepare(&txn)?;
        let prepare_ms = ms(t);
        let t = std::time::Instant::now();
        if let Err(source) = self.persist_running(&delta, rest.as_ref()) {
            self.tap.abort(&txn);
            return Err(OpError::Persist {
                what: "running",
                source,
            });
        }
        let persist_ms = ms(t);
        let t = std::time::Instant::now();
        self.tap.apply(&txn);
        let apply_ms = ms(t);
        let t = std::time::Instant::now();
        let removed = delta.clear || delta.changes.values().filter(|v| v.is_none()).count() >= 1000;
        {
            let mut stores = self.stores_mut();
            if let Some(rest) = rest {
                stores.running.rest = rest;
            }
            delta.apply_to(&mut stores.running.modules);
            if !stores.candidate_dirty {
                stores.candidate = None;
            }
        }
        let swap_ms = ms(t);
        tracing::info!(
            session_id = actor.session_id,
            user = %actor.user,
            changes = txn.changes.len(),
            source,
            "running configuration changed"
        );
        // Start-up restores what running already was: no subscriber can
        // exist yet, and logging it would push the replay log's history
        // out on every restart.
        if source != "startup" {
            self.notifier.config_change(self.ctx, &actor, touched, &txn);
        }
        // Trim only once the transaction (the tap's view of every changed
        // entry) is gone too.
        drop(txn);
        let t = std::time::Instant::now();
        if removed {
            crate::memtrim::release();
        }
        let trim_ms = ms(t);
        tracing::debug!(
            txn_ms,
            prepare_ms,
            persist_ms,
            apply_ms,
            swap_ms,
            trim_ms,
            "commit timings"
        );
        Ok(())
    }

    /// Makes a running change durable before it is applied: a journal
    /// record, or a new snapshot when the change is large.
    fn persist_running(
        &self,
        delta: &Delta,
        rest: Option<&DataTree<'static>>,
    ) -> std::io::Result<()> {
        let mut journal = crate::agent::guard(&self.journal);
        let stores = self.stores();
        let running = &stores.running;
        if journal.wants_snapshot(delta.changes.len(), running.modules.len(), delta.clear) {
            let rest = rest.unwrap_or(&running.rest);
            let mut next = if delta.clear {
                ModuleMap::new()
            } else {
                running.modules.clone()
            };
            for (id, v) in &delta.changes {
                match v {
                    Some(e) => {
                        next.insert(*id, e.clone());
                    }
                    None => {
                        next.remove(id);
                    }
                }
            }
            journal.write_snapshot(rest, next.values())
        } else {
            journal.append(delta.clear, &delta.changes, rest)
        }
    }
}
