//! `images remove`: `remove-image` on every device that holds an image,
//! concurrently; the device refuses while a module uses the image (it
//! says which), and the CIB forgets the install only when the device no
//! longer holds it.

use std::sync::Arc;

use crate::netconf::NetconfError;
use crate::Nco;

/// What one device did with one removal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoveOutcome {
    pub device: String,
    pub sha256: String,
    /// `Ok(true)`: removed; `Ok(false)`: the device did not hold it; `Err`:
    /// why it is still there (the device's error).
    pub result: Result<bool, String>,
}

async fn remove_one(nco: &Nco, device: &str, sha256: &str) -> Result<bool, String> {
    let session = nco.session(device).await.map_err(|e| e.to_string())?;
    let removed = match session.remove_image(sha256).await {
        Ok(()) => true,
        // Not (or no longer) there: what the removal wants.
        Err(NetconfError::RpcFailed(errs))
            if errs.iter().all(|e| e.error_tag == "data-missing") =>
        {
            false
        }
        Err(e) => return Err(format!("{device}: remove-image: {e}")),
    };
    nco.cib()
        .remove_image_install(device, sha256)
        .map_err(|e| format!("{device}: removed, but the CIB did not record it: {e}"))?;
    tracing::info!(device, sha256, removed, "image removal");
    Ok(removed)
}

/// Removes each of `images` from each of `devices`, at most `concurrency`
/// devices at once.
pub async fn remove(
    nco: &Arc<Nco>,
    images: Vec<String>,
    devices: Vec<String>,
    concurrency: usize,
) -> Vec<RemoveOutcome> {
    let permits = Arc::new(tokio::sync::Semaphore::new(concurrency.max(1)));
    let images = Arc::new(images);
    let mut tasks = tokio::task::JoinSet::new();
    for device in devices {
        let (nco, images, permits) = (nco.clone(), images.clone(), permits.clone());
        tasks.spawn(async move {
            let _permit = permits.acquire_owned().await;
            let mut out = Vec::new();
            for sha256 in images.iter() {
                let result = remove_one(&nco, &device, sha256).await;
                out.push(RemoveOutcome {
                    device: device.clone(),
                    sha256: sha256.clone(),
                    result,
                });
            }
            out
        });
    }
    let mut out = Vec::new();
    while let Some(done) = tasks.join_next().await {
        match done {
            Ok(o) => out.extend(o),
            Err(e) => tracing::error!(error = %e, "removal task failed"),
        }
    }
    out.sort_by(|a, b| (&a.device, &a.sha256).cmp(&(&b.device, &b.sha256)));
    out
}
