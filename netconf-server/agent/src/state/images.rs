//! `/l45:images/image`: the installed module images, with the modules of
//! running that use each.

use yang3::data::DataTree;

use crate::agent::{guard, Agent};
use crate::time::rfc3339;

impl Agent {
    pub(super) fn add_image_state(&self, tree: &mut DataTree<'static>) -> Result<(), yang3::Error> {
        let images: Vec<_> = guard(&self.images).images().cloned().collect();
        for img in images {
            let m = &img.manifest;
            // (digests are hex: safe inside the predicate)
            let base = format!(
                "/{}:images/image[sha256='{}']",
                l45_yang::L45_MODULE,
                m.sha256_hex
            );
            let mut leaf = |name: &str, value: &str| -> Result<(), yang3::Error> {
                tree.new_path(&format!("{base}/{name}"), Some(value), false)
                    .map(|_| ())
            };
            leaf("kind", &m.kind)?;
            leaf("signer", &img.signer)?;
            leaf("signer-key-id", &m.signer)?;
            leaf("target", &m.target)?;
            leaf("size", &m.size.to_string())?;
            leaf("built-at", &m.built_at)?;
            leaf("installed-at", &rfc3339(img.installed_at))?;
            let used_by: Vec<u32> = {
                let needle = format!("<kind-name>{}</kind-name>", m.kind);
                self.stores()
                    .running
                    .modules
                    .iter()
                    .filter(|(_, e)| e.contains(&needle))
                    .map(|(id, _)| *id)
                    .collect()
            };
            for id in used_by {
                tree.new_path(&format!("{base}/used-by[.='{id}']"), None, false)?;
            }
        }
        Ok(())
    }
}
