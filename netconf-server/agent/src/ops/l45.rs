//! The `layer45-customization` RPCs: `report` (module statistics),
//! `revoke-module` (a commit that removes the module from running),
//! `challenge` (AES-GCM challenge-response, answered by the tap),
//! `install-module` and `remove-image` (module images, `images.rs`).

use std::collections::BTreeMap;
use std::sync::Arc;

use base64::Engine as _;
use l45_netconf_proto::message::Rpc;
use yang3::data::{Data, DataTreeOwningRef};

use super::{ok, After, Reply};
use crate::agent::{guard, Agent};
use crate::config::commit::Commit;
use crate::config::delta::Delta;
use crate::config::edit::{EditOp, Touched};
use crate::datastore::{module_path, schema, Datastore, Slots};
use crate::error::OpError;
use crate::images::{InstallError, DEFAULT_MAX_IMAGE_SIZE};
use l45_images::TrustedSigner;

/// The images container of the model.
const IMAGES: &str = "/layer45-customization:images";
use crate::sessions::SessionInfo;
use crate::time::rfc3339;

/// install-module's message with the text of its `image` element replaced
/// by an empty value, and that text; `None` (libyang then reads the
/// message as sent) when the element is not a plain text element.
fn without_image_text(rpc: &Rpc) -> Option<(Vec<u8>, String)> {
    let img = rpc
        .operation
        .children
        .iter()
        .find(|c| c.is(l45_yang::L45_NAMESPACE, "image"))?;
    if !img.children.is_empty() || img.lazy.is_some() {
        return None;
    }
    let whole = rpc.source.get(img.span.clone())?;
    let after_name = img.name_end.checked_sub(img.span.start)?;
    // End of the start tag (attributes of an image leaf hold no '>'), and
    // start of the end tag.
    let open_end = after_name + whole.get(after_name..)?.iter().position(|&b| b == b'>')? + 1;
    let close_start = whole.iter().rposition(|&b| b == b'<')?;
    if close_start < open_end || whole.get(open_end - 2) == Some(&b'/') {
        return None;
    }
    let mut source = Vec::with_capacity(rpc.source.len() - (close_start - open_end));
    source.extend_from_slice(&rpc.source[..img.span.start + open_end]);
    source.extend_from_slice(&rpc.source[img.span.start + close_start..]);
    Some((source, img.text.clone()))
}

impl Agent {
    pub(super) fn op_l45(self: &Arc<Self>, s: &SessionInfo, rpc: &Rpc) -> Reply {
        // install-module: libyang checks the input with the image's text
        // replaced by a placeholder; the image is decoded here. (libyang
        // puts every value in its string dictionary, hashing and comparing
        // it: for a 600 KB image that was most of the agent's time per
        // install, tools/bench_images.py.)
        let split = (rpc.operation.name == "install-module")
            .then(|| without_image_text(rpc))
            .flatten();
        let source = split.as_ref().map_or(&rpc.source[..], |(s, _)| &s[..]);
        let tree = DataTreeOwningRef::parse_netconf_rpc_op(self.ctx, source)
            .map_err(OpError::YangRequest)?;
        let name = rpc.operation.name.as_str();
        let leaf = |leaf: &str| -> Option<String> {
            tree.find_path(&format!("/layer45-customization:{name}/{leaf}"))
                .ok()
                .and_then(|n| n.value_canonical())
        };
        let id = || -> Result<u32, OpError> {
            leaf("id")
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| OpError::MissingParameter {
                    element: "id",
                    message: "id is missing".into(),
                })
        };
        let b64 = base64::engine::general_purpose::STANDARD;
        let missing = |element: &'static str| OpError::MissingParameter {
            element,
            message: format!("{element} is missing"),
        };
        let decode = |v: &[u8], element: &str| {
            b64.decode(v).map_err(|e| OpError::BadParameter {
                element: element.to_string(),
                message: format!("{element} is not valid base64: {e}"),
            })
        };
        match name {
            "report" => Ok((self.report(), After::Continue)),
            "revoke-module" => self.revoke(s, id()?),
            "challenge" => {
                let id = id()?;
                let nonce = leaf("nonce")
                    .and_then(|v| b64.decode(v).ok())
                    .unwrap_or_default();
                let ct = leaf("ciphertext")
                    .and_then(|v| b64.decode(v).ok())
                    .unwrap_or_default();
                let answer = self.tap.challenge(id, &nonce, &ct).map_err(|e| {
                    self.notifier.security_check_failed(id, &e.to_string());
                    OpError::Tap(e)
                })?;
                let ns = l45_yang::L45_NAMESPACE;
                Ok((
                    format!(
                        "<nonce xmlns=\"{ns}\">{}</nonce><ciphertext xmlns=\"{ns}\">{}</ciphertext>",
                        b64.encode(&answer.nonce),
                        b64.encode(&answer.ciphertext)
                    ),
                    After::Continue,
                ))
            }
            "install-module" => {
                let image = match &split {
                    // (line breaks are allowed in base64 text; copy only then)
                    Some((_, text)) if text.bytes().any(|b| b.is_ascii_whitespace()) => {
                        let compact: Vec<u8> =
                            text.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
                        decode(&compact, "image")?
                    }
                    Some((_, text)) => decode(text.as_bytes(), "image")?,
                    None => leaf("image")
                        .ok_or_else(|| missing("image"))
                        .and_then(|v| decode(v.as_bytes(), "image"))?,
                };
                let manifest = leaf("manifest").ok_or_else(|| missing("manifest"))?;
                let signature = leaf("signature")
                    .ok_or_else(|| missing("signature"))
                    .and_then(|v| decode(v.as_bytes(), "signature"))?;
                self.install_image(s, &image, manifest.as_bytes(), &signature)
            }
            "remove-image" => {
                let sha = leaf("sha256").ok_or_else(|| missing("sha256"))?;
                self.remove_image(s, &sha)
            }
            other => Err(OpError::NotSupported {
                element: None,
                message: format!("operation {other} is not supported"),
            }),
        }
    }

    /// Every module the tap holds: state, statistics and (from running)
    /// whether it is activated.
    fn report(&self) -> String {
        let ns = l45_yang::L45_NAMESPACE;
        let mut out = String::new();
        let stats = self.tap.module_stats();
        let activated: BTreeMap<u32, bool> = match schema() {
            Ok(schema) => {
                let stores = self.stores();
                stats
                    .iter()
                    .filter_map(|st| {
                        let e = stores.running.modules.get(&st.id)?;
                        let slots = Slots::parse(schema, e).ok()?;
                        Some((st.id, slots.module_config(schema).activated))
                    })
                    .collect()
            }
            Err(_) => BTreeMap::new(),
        };
        for st in stats {
            out.push_str(&format!(
                "<module xmlns=\"{ns}\"><id>{}</id><state>{}</state>",
                st.id,
                st.state.as_str()
            ));
            if let Some(a) = activated.get(&st.id) {
                out.push_str(&format!("<activated>{a}</activated>"));
            }
            if let Some(ts) = st.active_ts {
                out.push_str(&format!("<active-ts>{}</active-ts>", rfc3339(ts)));
            }
            out.push_str(&format!(
                "<socket-count>{}</socket-count><bytes-sent>{}</bytes-sent><bytes-received>{}</bytes-received><messages-sent>{}</messages-sent><messages-received>{}</messages-received><errors>{}</errors></module>",
                st.socket_count, st.bytes_sent, st.bytes_received, st.messages_sent, st.messages_received, st.errors
            ));
        }
        out
    }

    /// `revoke-module`: the module leaves running (and so every socket).
    fn revoke(&self, s: &SessionInfo, id: u32) -> Reply {
        let _w = guard(&self.write_lock);
        self.check_lock(Datastore::Running, s)?;
        let path = module_path(id);
        if !self.stores().running.modules.contains_key(&id) {
            return Err(OpError::DataMissing {
                message: format!("no module {id}"),
                path,
            });
        }
        let mut delta = Delta::default();
        delta.changes.insert(id, None);
        let touched = [Touched {
            path,
            op: EditOp::Delete,
        }];
        self.commit(Commit {
            actor: s.actor(),
            delta,
            rest: None,
            touched: &touched,
            source: "running",
        })?;
        ok()
    }

    /// The trusted signers and the image size limit of running.
    fn image_policy(&self) -> (Vec<TrustedSigner>, u64) {
        let stores = self.stores();
        let rest = &stores.running.rest;
        let mut trusted = Vec::new();
        if let Ok(set) = rest.find_xpath(&format!("{IMAGES}/trusted-signer")) {
            for signer in set {
                let mut name = String::new();
                let mut key = None;
                for c in signer.children() {
                    let v = c.value_canonical().unwrap_or_default();
                    match c.schema().name() {
                        "name" => name = v,
                        "public-key" => key = l45_images::parse_public_key(&v).ok(),
                        _ => {}
                    }
                }
                match key {
                    Some(public_key) => trusted.push(TrustedSigner { name, public_key }),
                    None => {
                        tracing::warn!(signer = %name, "trusted signer with an unusable key ignored")
                    }
                }
            }
        }
        let limit = rest
            .find_path(&format!("{IMAGES}/max-image-size"))
            .ok()
            .and_then(|n| n.value_canonical())
            .and_then(|v| v.parse().ok())
            .unwrap_or(DEFAULT_MAX_IMAGE_SIZE);
        (trusted, limit)
    }

    /// `install-module`: verify, store, load (`ImageStore::install`).
    fn install_image(
        &self,
        s: &SessionInfo,
        image: &[u8],
        manifest: &[u8],
        signature: &[u8],
    ) -> Reply {
        let (trusted, limit) = self.image_policy();
        let _w = guard(&self.write_lock);
        let stored = guard(&self.images)
            .install(&*self.tap, image, manifest, signature, &trusted, limit)
            .inspect_err(|error| {
                tracing::warn!(session_id = s.id, user = %s.username, %error, "module image refused");
            })?;
        let ns = l45_yang::L45_NAMESPACE;
        Ok((
            format!(
                "<sha256 xmlns=\"{ns}\">{}</sha256><kind xmlns=\"{ns}\">{}</kind>",
                stored.manifest.sha256_hex, stored.manifest.kind
            ),
            After::Continue,
        ))
    }

    /// `remove-image`: refused while a module of running or candidate
    /// uses the image's kind.
    fn remove_image(&self, s: &SessionInfo, sha256: &str) -> Reply {
        let _w = guard(&self.write_lock);
        let mut images = guard(&self.images);
        let Some(img) = images.get(sha256) else {
            return Err(InstallError::NoSuchImage(sha256.to_string()).into());
        };
        let kind = img.manifest.kind.clone();
        let users = self.modules_using(&kind);
        if !users.is_empty() {
            let modules: Vec<String> = users.iter().map(u32::to_string).collect();
            return Err(InstallError::InUse {
                sha256: sha256.to_string(),
                kind,
                modules: modules.join(", "),
            }
            .into());
        }
        images.remove(&*self.tap, sha256)?;
        tracing::info!(session_id = s.id, user = %s.username, sha256, "module image removed by request");
        ok()
    }

    /// Ids of the modules of running and candidate whose installed kind
    /// is `kind`.
    pub(crate) fn modules_using(&self, kind: &str) -> Vec<u32> {
        let needle = format!("<kind-name>{kind}</kind-name>");
        let stores = self.stores();
        let mut ids: Vec<u32> = stores
            .running
            .modules
            .iter()
            .chain(stores.candidate.iter().flat_map(|c| c.modules.iter()))
            .filter(|(_, e)| e.contains(&needle))
            .map(|(id, _)| *id)
            .collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    }
}
