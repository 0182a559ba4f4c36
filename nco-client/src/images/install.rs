//! The image step of a deploy request (`modules deploy --image`): a module
//! whose CIB row names an image is configured only once its device holds
//! that image. What the device holds is read from its own `/images` state,
//! not only from the CIB (an install may have landed just before a crash,
//! or been made by hand), so a device that has the digest is not sent it
//! again. Installing is idempotent on the device as well, so a step that is
//! resent after a crash, or run by two requests of one device at once,
//! leaves one image.

use std::sync::Arc;

use crate::device_xml;
use crate::nco::NcoError;
use crate::netconf::{NetconfError, Session};
use crate::Nco;

use super::push::install_input;
use super::SignedImage;

/// What the image step did on one device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageStep {
    /// The device already held the image: nothing was sent.
    AlreadyHeld,
    /// `install-module` was sent and accepted.
    Installed,
}

fn image_error(sha256: &str, reason: impl Into<String>) -> NcoError {
    NcoError::Image {
        sha256: sha256.to_string(),
        reason: reason.into(),
    }
}

/// Whether the device's `/images` state lists `sha256`.
pub async fn device_holds(session: &Session, sha256: &str) -> Result<bool, NetconfError> {
    let data = session
        .get(Some(&device_xml::installed_images_filter()))
        .await?;
    let held = device_xml::parse_installed_images(&data)
        .map_err(|e| NetconfError::UnexpectedReply(format!("images state: {e}")))?;
    Ok(held.iter().any(|h| h == sha256))
}

impl Nco {
    /// The `install-module` input of a recorded image, read from where the
    /// CIB recorded it and checked against its digest.
    fn install_input_of(&self, sha256: &str) -> Result<Arc<String>, NcoError> {
        if let Some(input) = self.image_inputs.get(sha256) {
            return Ok(input);
        }
        let recorded = self
            .cib()
            .image(sha256)?
            .ok_or_else(|| image_error(sha256, "not recorded in the CIB"))?;
        let image = SignedImage::read(std::path::Path::new(&recorded.path))
            .map_err(|e| image_error(sha256, e.to_string()))?;
        let signature_changed = recorded
            .signature
            .as_ref()
            .is_some_and(|s| *s != image.signature_hex());
        if image.manifest.sha256_hex != sha256 || signature_changed {
            return Err(image_error(
                sha256,
                format!(
                    "{} now holds another image or signature ({}); build or push it again",
                    recorded.path, image.manifest.sha256_hex
                ),
            ));
        }
        let input = Arc::new(install_input(&image));
        self.image_inputs.put(sha256, input.clone());
        Ok(input)
    }

    /// Makes sure `device` holds image `sha256`: asks the device, installs
    /// it if it lacks it, and records the install in the CIB either way.
    pub async fn ensure_image(
        &self,
        session: &Session,
        device: &str,
        sha256: &str,
    ) -> Result<ImageStep, NcoError> {
        let dev = |source| NcoError::Device {
            device: device.to_string(),
            source,
        };
        let step = if device_holds(session, sha256).await.map_err(dev)? {
            tracing::debug!(device, sha256, "image already on the device");
            ImageStep::AlreadyHeld
        } else {
            let input = self.install_input_of(sha256)?;
            session.install_module(&input).await.map_err(dev)?;
            tracing::info!(device, sha256, "image installed");
            ImageStep::Installed
        };
        let mut cib = self.cib();
        if step == ImageStep::Installed || !cib.has_image_install(device, sha256)? {
            cib.record_image_install(device, sha256)?;
        }
        Ok(step)
    }
}
