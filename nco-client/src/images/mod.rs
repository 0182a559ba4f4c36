//! Module images on the NCO side: the signing key (`key`), building and
//! signing a kind crate into an image (`build`), pushing images to
//! devices, each device getting the one built for its target (`push`), and
//! the image step of a deploy request (`install`).
//! The manifest format and the signature are `l45_images`'.

pub mod build;
pub(crate) mod input_cache;
pub mod install;
pub mod kernel_build;
pub mod key;
pub mod push;
pub mod remove;

use std::path::{Path, PathBuf};

/// What can go wrong with images on the NCO side.
#[derive(Debug, thiserror::Error)]
pub enum ImagesError {
    #[error("signing key {path}: {reason}")]
    Key { path: PathBuf, reason: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("kind crate {dir}: {reason}")]
    Crate { dir: PathBuf, reason: String },
    #[error("cargo build in {dir} failed ({status}); its output is above")]
    CargoFailed { dir: PathBuf, status: String },
    #[error("built library {path}: {reason}")]
    BadLibrary { path: PathBuf, reason: String },
    #[error("building the kernel module")]
    KernelBuild(#[from] kernel_build::KernelBuildError),
    #[error("image {path}: {source}")]
    Image {
        path: PathBuf,
        source: l45_images::ImageError,
    },
    #[error("image {path} does not match its manifest: {reason}")]
    Mismatch { path: PathBuf, reason: String },
}

pub(crate) fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> ImagesError + '_ {
    move |source| ImagesError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The manifest's and the signature's paths beside an image file.
pub fn companion_paths(image: &Path) -> (PathBuf, PathBuf) {
    let with = |suffix: &str| {
        let mut name = image.as_os_str().to_owned();
        name.push(suffix);
        PathBuf::from(name)
    };
    (with(".manifest"), with(".sig"))
}

/// An image with its manifest and signature, read back from disk and
/// checked against each other (size, digest).
#[derive(Debug, Clone)]
pub struct SignedImage {
    pub path: PathBuf,
    pub image: Vec<u8>,
    pub manifest_text: String,
    pub manifest: l45_images::Manifest,
    pub signature: [u8; 64],
}

impl SignedImage {
    /// Reads `IMAGE`, `IMAGE.manifest` and `IMAGE.sig`.
    pub fn read(path: &Path) -> Result<SignedImage, ImagesError> {
        let (mpath, spath) = companion_paths(path);
        let image = std::fs::read(path).map_err(io_err(path))?;
        let manifest_bytes = std::fs::read(&mpath).map_err(io_err(&mpath))?;
        let manifest =
            l45_images::Manifest::parse(&manifest_bytes).map_err(|source| ImagesError::Image {
                path: mpath.clone(),
                source,
            })?;
        let sig = std::fs::read(&spath).map_err(io_err(&spath))?;
        let signature: [u8; 64] = sig.as_slice().try_into().map_err(|_| ImagesError::Image {
            path: spath.clone(),
            source: l45_images::ImageError::SignatureLength(sig.len()),
        })?;
        let digest = l45_images::sha256_hex(&image);
        if digest != manifest.sha256_hex || image.len() as u64 != manifest.size {
            return Err(ImagesError::Mismatch {
                path: path.to_path_buf(),
                reason: format!(
                    "{} bytes with SHA-256 {digest}; the manifest says {} bytes, {}",
                    image.len(),
                    manifest.size,
                    manifest.sha256_hex
                ),
            });
        }
        Ok(SignedImage {
            path: path.to_path_buf(),
            image,
            manifest_text: String::from_utf8_lossy(&manifest_bytes).into_owned(),
            manifest,
            signature,
        })
    }

    /// The signature in lowercase hex, as the CIB records it.
    pub fn signature_hex(&self) -> String {
        self.signature.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The CIB's record of it.
    pub fn record(&self) -> l45_cib::Image {
        l45_cib::Image {
            sha256: self.manifest.sha256_hex.clone(),
            kind: self.manifest.kind.clone(),
            target: self.manifest.target.clone(),
            size: self.manifest.size,
            signer: self.manifest.signer.clone(),
            built_at: self.manifest.built_at.clone(),
            path: self.path.display().to_string(),
            recorded_at: l45_cib::Timestamp::now(),
            signature: Some(self.signature_hex()),
        }
    }
}
