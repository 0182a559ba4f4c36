//! `images push`: each device gets, of the images given, the one built for
//! the target its tap loads (read from the device's check-in data,
//! `/l45:device/tap`), over one `install-module` each; every accepted
//! install is recorded in the CIB.

use std::sync::Arc;

use base64::Engine as _;
use l45_cib::DeviceData;
use l45_netconf_proto::xml::escape_text;

use super::SignedImage;
use crate::device_xml::{self, CheckInData};
use crate::Nco;

/// What one device did with the push.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushOutcome {
    pub device: String,
    /// The installed image's SHA-256, or why the device has none.
    pub result: Result<String, String>,
}

/// The target a device's images must have: what it says
/// (`tap/image-target`), else derived from its tap and platform.
pub fn device_target(c: &CheckInData) -> Option<String> {
    if let Some(t) = &c.image_target {
        return Some(t.clone());
    }
    let d = &c.data;
    match d.tap_backend.as_str() {
        "userspace" | "recording" if !d.architecture.is_empty() => {
            Some(format!("userspace-{}", d.architecture))
        }
        "kernel" if !d.architecture.is_empty() => d
            .kernel_module_release
            .as_ref()
            .map(|r| format!("kernel-{r}-{}", d.architecture)),
        _ => None,
    }
}

fn describe(d: &DeviceData) -> String {
    format!(
        "{} tap, {}, kernel {}",
        if d.tap_backend.is_empty() {
            "unknown"
        } else {
            &d.tap_backend
        },
        if d.architecture.is_empty() {
            "unknown architecture"
        } else {
            &d.architecture
        },
        if d.kernel_release.is_empty() {
            "unknown"
        } else {
            &d.kernel_release
        }
    )
}

/// The image of `images` for a device with check-in `c`, or why none fits.
pub fn choose<'a>(
    device: &str,
    c: &CheckInData,
    images: &'a [SignedImage],
) -> Result<&'a SignedImage, String> {
    let given: Vec<&str> = images.iter().map(|i| i.manifest.target.as_str()).collect();
    let Some(target) = device_target(c) else {
        return Err(format!(
            "device {device} ({}) loads no module images",
            describe(&c.data)
        ));
    };
    images
        .iter()
        .find(|i| i.manifest.target == target)
        .ok_or_else(|| {
            format!(
                "device {device} ({}) needs an image for target {target}; given: {}",
                describe(&c.data),
                given.join(", ")
            )
        })
}

/// The `install-module` input of an image (built once, sent to many).
pub fn install_input(i: &SignedImage) -> String {
    let b64 = base64::engine::general_purpose::STANDARD;
    format!(
        "<image>{}</image><manifest>{}</manifest><signature>{}</signature>",
        b64.encode(&i.image),
        escape_text(&i.manifest_text),
        b64.encode(i.signature)
    )
}

async fn push_one(
    nco: &Nco,
    device: &str,
    images: &[SignedImage],
    inputs: &[String],
) -> Result<String, String> {
    let session = nco.session(device).await.map_err(|e| e.to_string())?;
    let data = session
        .get(Some(&device_xml::device_filter()))
        .await
        .map_err(|e| format!("{device}: reading its check-in data: {e}"))?;
    let checkin =
        device_xml::parse_device(&data).map_err(|e| format!("{device}: check-in data: {e}"))?;
    let image = choose(device, &checkin, images)?;
    let index = images
        .iter()
        .position(|i| std::ptr::eq(i, image))
        .unwrap_or_default();
    session
        .install_module(&inputs[index])
        .await
        .map_err(|e| format!("{device}: install-module: {e}"))?;
    let sha = image.manifest.sha256_hex.clone();
    nco.cib()
        .record_image_install(device, &sha)
        .map_err(|e| format!("{device}: installed, but the CIB did not record it: {e}"))?;
    tracing::info!(device, sha256 = %sha, kind = %image.manifest.kind, "image installed");
    Ok(sha)
}

/// Pushes to every device of `devices`, at most `concurrency` at once.
pub async fn push(
    nco: &Arc<Nco>,
    images: Arc<Vec<SignedImage>>,
    devices: Vec<String>,
    concurrency: usize,
) -> Vec<PushOutcome> {
    let inputs: Arc<Vec<String>> = Arc::new(images.iter().map(install_input).collect());
    let permits = Arc::new(tokio::sync::Semaphore::new(concurrency.max(1)));
    let mut tasks = tokio::task::JoinSet::new();
    for device in devices {
        let (nco, images, inputs, permits) =
            (nco.clone(), images.clone(), inputs.clone(), permits.clone());
        tasks.spawn(async move {
            let _permit = permits.acquire_owned().await;
            let result = push_one(&nco, &device, &images, &inputs).await;
            PushOutcome { device, result }
        });
    }
    let mut out = Vec::new();
    while let Some(done) = tasks.join_next().await {
        match done {
            Ok(o) => out.push(o),
            Err(e) => tracing::error!(error = %e, "push task failed"),
        }
    }
    out.sort_by(|a, b| a.device.cmp(&b.device));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(target: &str) -> SignedImage {
        SignedImage {
            path: "x.so".into(),
            image: vec![1],
            manifest_text: String::new(),
            manifest: l45_images::Manifest {
                kind: "udp-xor-mask".into(),
                abi_version: 1,
                target: target.into(),
                sha256_hex: "0".repeat(64),
                size: 1,
                built_at: "2026-12-06T00:00:00Z".into(),
                signer: "0".repeat(16),
            },
            signature: [0; 64],
        }
    }

    #[test]
    fn each_device_gets_its_target_or_a_clear_refusal() {
        let images = vec![image("userspace-x86_64"), image("kernel-6.1.0-x86_64")];
        let mut c = CheckInData::default();
        c.data.tap_backend = "kernel".into();
        c.data.architecture = "x86_64".into();
        c.data.kernel_release = "6.1.0".into();
        c.data.kernel_module_release = Some("6.1.0".into());
        assert_eq!(
            choose("d1", &c, &images).map(|i| i.manifest.target.clone()),
            Ok("kernel-6.1.0-x86_64".to_string())
        );
        c.data.kernel_module_release = Some("6.12.118".into());
        let err = choose("d1", &c, &images).expect_err("refused");
        assert!(err.contains("device d1"), "{err}");
        assert!(err.contains("kernel-6.12.118-x86_64"), "{err}");
        c.image_target = Some("userspace-x86_64".into());
        assert!(choose("d1", &c, &images).is_ok());
        let none = CheckInData::default();
        assert!(choose("d2", &none, &images)
            .err()
            .is_some_and(|e| e.contains("loads no module images")));
    }
}
